//! candle integration (filled in by the candle work).
