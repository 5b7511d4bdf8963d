//! One consumer per upstream topic.

pub mod roomserver_output;
