//! The pipeline: the content-addressed artifact store every stage writes into (design §3).

pub mod store;
