"""FiftyOne adapter for SEI (placeholder until the FiftyOne issue lands)."""
