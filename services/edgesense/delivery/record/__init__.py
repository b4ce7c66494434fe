"""Record: what an attempt's outcome means for its delivery (retry, fail, hold),
and writing it back."""
