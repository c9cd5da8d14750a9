"""A conversation the conversation and tracing tests share: a follow-up about international
transfers, and what a rewrite of it into a standalone question says."""

TURNS = [
    {"role": "user", "content": "I want to send money to a friend in the US."},
    {"role": "assistant", "content": "International transfers go through SWIFT."},
    {"role": "user", "content": "How much does that cost?"},
    {"role": "assistant", "content": "The fee is 0.5% of the amount, at least 5 EUR."},
]

REWRITTEN = "How long does an international transfer to the US take?"
