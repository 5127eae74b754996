//! Shared helpers of the candle examples.
