//! `chat`: the terminal client for chatd. Decides how to trust the daemon, logs in (or registers),
//! then hands over to the session, fed by the line editor on a terminal or by stdin line by line.

mod args;
mod command;
mod connection;
mod input;
mod login;
mod render;
mod session;
mod state;
mod trust;
mod view;

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use tokio::sync::mpsc;

use crate::args::{Args, Config};
use crate::login::{Credentials, LoginError};
use crate::render::{Output, Style};
use crate::session::Session;

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::from_args(&args, input::is_tty(0), input::is_tty(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chat: {e:#}");
            return ExitCode::from(2);
        }
    };
    let term = cfg.interactive.then(input::TermGuard::save);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    let out = Arc::new(Output::default());
    let result = rt.block_on(run(args, cfg, out.clone()));
    out.use_stdout();
    if let Some(t) = &term {
        t.restore();
    }
    rt.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args, cfg: Config, out: Arc<Output>) -> Result<()> {
    let style = Style { color: cfg.color };
    let interactive = cfg.interactive;
    // What chat says before the session starts: on the terminal, or (scripted) on stderr so that
    // stdout carries only events.
    let say = move |s: &str| {
        if interactive {
            println!("{s}")
        } else {
            eprintln!("{s}")
        }
    };
    let trust = trust::decide(&args, &cfg, &mut login::confirm, &say).await?;

    let preset = login::preset_password(&args)?;
    let mut user = match args.user.clone() {
        Some(u) => u,
        None if interactive => login::prompt_line("user: ")?,
        None => bail!("--user (or $CHAT_USER) is needed when stdin is not a terminal"),
    };
    let mut name = login::check_user(&user);
    while let Err(why) = name {
        if !interactive {
            bail!("user {user:?}: {why}");
        }
        println!("{why}");
        user = login::prompt_line("user: ")?;
        name = login::check_user(&user);
    }
    let mut register = args.register;
    let mut password = match &preset {
        Some(p) => p.clone(),
        None if !interactive => {
            bail!("no password: set $CHAT_PASSWORD or use --password-file (stdin is not a terminal)")
        }
        None if register => login::prompt_new_password()?,
        None => login::prompt_password(&format!("password for {user}: "))?,
    };

    let mut tries = 0;
    let (conn, me, creds) = loop {
        let creds = match (login::check_user(&user), login::check_password(&password)) {
            (Ok(user), Ok(password)) => Credentials { user, password },
            (Err(why), _) | (_, Err(why)) => {
                bail!("{} as {user}: {why}", if register { "registering" } else { "logging in" })
            }
        };
        let mut conn = match trust::connect(&cfg, &trust).await {
            Ok(c) => c,
            Err(e) => bail!("cannot connect to {}: {}", cfg.addr, e.describe(cfg.verbose)),
        };
        match login::authenticate(&mut conn, &creds, register).await {
            Ok(me) => break (conn, me, creds),
            Err(LoginError::Throttled(secs)) if tries < 5 => {
                say(&format!("too many attempts; the server asks to wait {secs}s"));
                tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
            }
            Err(LoginError::Wrong) if interactive && preset.is_none() && tries < 3 => {
                println!("wrong user name or password");
                if !register
                    && tries == 0
                    && login::confirm(&format!("register a new account {user:?} instead? [y/N] "))
                {
                    register = true;
                    password = login::prompt_new_password()?;
                } else {
                    password = login::prompt_password(&format!("password for {user}: "))?;
                }
            }
            Err(LoginError::Taken) if interactive && tries < 3 => {
                println!("the user name {user:?} is taken");
                user = login::prompt_line("user: ")?;
            }
            Err(e) => {
                bail!("{} as {user}: {}", if register { "registering" } else { "logging in" }, e.describe(cfg.verbose))
            }
        }
        tries += 1;
    };

    let prompt = Arc::new(Mutex::new("> ".to_string()));
    let (tx, rx) = mpsc::channel(64);
    if interactive {
        input::spawn_tty(tx, prompt.clone(), &out)?;
    } else {
        input::spawn_scripted(tx, cfg.eof_grace);
    }
    out.line(style.info(&format!("logged in as {me} on {}", cfg.addr)));
    if interactive && cfg.join.is_empty() {
        out.line(style.info("/rooms lists the rooms, /join <room> enters one, /help tells the rest"));
    }
    Session::new(cfg, trust, creds, me, out, prompt).run(conn, rx).await
}
