//! The knowledge base: schema, build pipeline, verification.
