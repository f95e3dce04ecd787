"""spamgate filters: the contract (api), helpers for authors (testing) and the built-ins."""
