//! Password hashing (argon2id, the recommended parameters: 19 MiB, 2 passes, 1 lane) on a fixed set
//! of low-priority threads. Each thread owns one argon2 memory area and reuses it for every hash, so
//! memory stays at `workers × 19 MiB` however many logins come, and a login storm yields the CPU to
//! chat (the threads run at nice 19). Nothing here runs on the async worker threads.

use std::sync::{Arc, Mutex};

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::{mpsc, oneshot};

/// How much lower than the rest of the daemon the hashing threads run (nice value).
const NICENESS: i32 = 19;

enum Job {
    Hash { password: String, reply: oneshot::Sender<Option<String>> },
    Verify { password: String, hash: String, reply: oneshot::Sender<bool> },
}

/// A handle to the hashing threads. Jobs wait in a bounded queue.
pub struct Hasher {
    jobs: mpsc::Sender<Job>,
}

impl Hasher {
    pub fn start(workers: usize) -> std::io::Result<Hasher> {
        let (jobs, rx) = mpsc::channel(4096);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("chatd-argon2-{i}")).spawn(move || worker(rx))?;
        }
        Ok(Hasher { jobs })
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`) for a new password.
    pub async fn hash(&self, password: &str) -> Option<String> {
        let (reply, rx) = oneshot::channel();
        self.jobs.send(Job::Hash { password: password.to_string(), reply }).await.ok()?;
        rx.await.ok().flatten()
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, password: &str, hash: String) -> bool {
        let (reply, rx) = oneshot::channel();
        if self.jobs.send(Job::Verify { password: password.to_string(), hash, reply }).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

fn worker(jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    // SAFETY: setpriority on this thread's own id; failure only leaves the priority unchanged.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, NICENESS);
    }
    let mut memory = vec![Block::default(); Params::DEFAULT.block_count()];
    loop {
        let job = jobs.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
        match job {
            None => return,
            Some(Job::Hash { password, reply }) => {
                let _ = reply.send(hash(password.as_bytes(), &mut memory));
            }
            Some(Job::Verify { password, hash, reply }) => {
                let _ = reply.send(verify(password.as_bytes(), &hash, &mut memory));
            }
        }
    }
}

fn hash(password: &[u8], memory: &mut [Block]) -> Option<String> {
    let params = Params::DEFAULT;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_buf = [0u8; 64];
    let salt_bytes = salt.as_salt().decode_b64(&mut salt_buf).ok()?;
    let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
        argon.hash_password_into_with_memory(password, salt_bytes, out, &mut *memory).map_err(Into::into)
    })
    .ok()?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).ok()?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Some(phc.to_string())
}

fn verify(password: &[u8], phc: &str, memory: &mut [Block]) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return false };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else { return false };
    let (Ok(params), Ok(algorithm)) = (Params::try_from(&parsed), Algorithm::try_from(parsed.algorithm)) else {
        return false;
    };
    let version = parsed.version.and_then(|v| Version::try_from(v).ok()).unwrap_or_default();
    // A hash made with other parameters (an older chatd) needs its own memory size.
    let mut own;
    let blocks = if params.block_count() == memory.len() {
        memory
    } else {
        own = vec![Block::default(); params.block_count()];
        &mut own[..]
    };
    let argon = Argon2::new(algorithm, version, params);
    let mut salt_buf = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_buf) else { return false };
    let computed = Output::init_with(expected.len(), |out| {
        argon.hash_password_into_with_memory(password, salt_bytes, out, &mut *blocks).map_err(Into::into)
    });
    // `Output`'s equality is constant-time.
    computed.is_ok_and(|c| c == expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[tokio::test]
    async fn hashes_are_standard_phc_strings_and_verify() {
        let hasher = Hasher::start(1).unwrap();
        let phc = hasher.hash("correct-horse").await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        // Interoperable with the argon2 crate's own verifier.
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default().verify_password(b"correct-horse", &parsed).is_ok());
        assert!(hasher.verify("correct-horse", phc.clone()).await);
        assert!(!hasher.verify("wrong-horse", phc).await);
        assert!(!hasher.verify("x", "not a hash".into()).await);
    }

    #[tokio::test]
    async fn hashes_with_other_parameters_still_verify() {
        use argon2::PasswordHasher;
        let params = Params::new(8192, 1, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"old-password", &salt)
            .unwrap()
            .to_string();
        let hasher = Hasher::start(1).unwrap();
        assert!(hasher.verify("old-password", phc.clone()).await);
        assert!(!hasher.verify("old-passwore", phc).await);
    }
}
