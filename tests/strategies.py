"""Hypothesis strategies shared by the retrieval tests."""

from hypothesis import strategies as st

# Metadata filters over the demo knowledge base, including a value no document has.
FILTERS = st.fixed_dictionaries(
    {},
    optional={
        "product": st.lists(
            st.sampled_from(["cards", "loans", "security", "transfers", "app", "nope"]),
            min_size=1,
            max_size=3,
        ).map(tuple),
        "doc_type": st.lists(
            st.sampled_from(["faq", "guide", "policy", "fees"]), min_size=1, max_size=2
        ).map(tuple),
    },
)
