//! The IRCv3 capabilities chatd offers (CAP LS), and the set one connection negotiated.

/// A set of capabilities, one bit each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps(u32);

pub const ACCOUNT_TAG: u32 = 1 << 0;
pub const BATCH: u32 = 1 << 1;
pub const CAP_NOTIFY: u32 = 1 << 2;
pub const ECHO_MESSAGE: u32 = 1 << 3;
pub const EXTENDED_JOIN: u32 = 1 << 4;
pub const LABELED_RESPONSE: u32 = 1 << 5;
pub const MESSAGE_TAGS: u32 = 1 << 6;
pub const SERVER_TIME: u32 = 1 << 7;
pub const SASL: u32 = 1 << 8;
pub const ACCOUNT_REGISTRATION: u32 = 1 << 9;
pub const CHATHISTORY: u32 = 1 << 10;
pub const MESSAGE_REDACTION: u32 = 1 << 11;

/// Every capability offered: name, bit, and value (shown to `CAP LS 302` clients).
pub const OFFERED: &[(&str, u32, Option<&str>)] = &[
    ("account-tag", ACCOUNT_TAG, None),
    ("batch", BATCH, None),
    ("cap-notify", CAP_NOTIFY, None),
    ("draft/account-registration", ACCOUNT_REGISTRATION, Some("before-connect,custom-account-name")),
    ("draft/chathistory", CHATHISTORY, None),
    ("draft/message-redaction", MESSAGE_REDACTION, None),
    ("echo-message", ECHO_MESSAGE, None),
    ("extended-join", EXTENDED_JOIN, None),
    ("labeled-response", LABELED_RESPONSE, None),
    ("message-tags", MESSAGE_TAGS, None),
    ("sasl", SASL, Some("PLAIN")),
    ("server-time", SERVER_TIME, None),
];

impl Caps {
    pub fn has(self, cap: u32) -> bool {
        self.0 & cap != 0
    }

    pub fn set(&mut self, cap: u32, on: bool) {
        if on {
            self.0 |= cap;
        } else {
            self.0 &= !cap;
        }
    }

    /// The names of the capabilities in the set, space-separated (CAP LIST).
    pub fn names(self) -> String {
        OFFERED.iter().filter(|(_, bit, _)| self.has(*bit)).map(|(name, _, _)| *name).collect::<Vec<_>>().join(" ")
    }
}

/// The bit of an offered capability.
pub fn by_name(name: &str) -> Option<u32> {
    OFFERED.iter().find(|(n, _, _)| *n == name).map(|(_, bit, _)| *bit)
}

/// The CAP LS list: with values for version 302 and later.
pub fn ls(version: u32) -> String {
    OFFERED
        .iter()
        .map(|(name, _, value)| match value {
            Some(v) if version >= 302 => format!("{name}={v}"),
            _ => name.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn ls_shows_values_only_to_302() {
        assert!(super::ls(302).contains("sasl=PLAIN"));
        assert!(super::ls(301).split(' ').any(|c| c == "sasl"));
    }
}
