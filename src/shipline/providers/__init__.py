"""Where completions come from. The engine only sees `Provider`; it never names a vendor."""
