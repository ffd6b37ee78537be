//! Backups: the whole instance ([`instance`]) and one reseller's subtree as a signed,
//! encrypted archive ([`archive`] for the file, [`reseller`] for what goes in and how it
//! comes back).

pub mod archive;
pub mod instance;
pub mod reseller;
