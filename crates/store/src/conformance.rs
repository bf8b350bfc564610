//! The conformance suite every store backend must pass (see `store_conformance!`).
