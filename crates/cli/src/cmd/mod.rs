//! One file per command: parse and check arguments, then open keys and the
//! repository, then call into holdfast-repo (or the vault) and print.

pub mod audit;
pub mod backup;
pub mod completion;
pub mod diff;
pub mod drill;
pub mod export;
pub mod find;

pub mod govern;
pub mod init;
pub mod key;
pub mod replica;

pub mod ls;
pub mod mail;
pub mod man;
pub mod mount;
pub mod restore;
pub mod retention;
pub mod snapshots;
pub mod stats;
pub mod status;
pub mod vault;
pub mod verify;
