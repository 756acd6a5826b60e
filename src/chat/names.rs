//! The names the core works with. They are defined once, in `chatd_proto::names`, so the daemon and
//! every client agree on what a valid user, room, password or bot command word is; the core uses the
//! checked values only, never a raw string.

pub use chatd_proto::names::{CommandWord, Password, RoomName, UserName};
