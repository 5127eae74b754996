//! Shared helpers of the burn examples.
