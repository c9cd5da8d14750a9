"""Entity `customer` and its precomputed features (made nightly from a parquet file).

Feast runs every .py in this folder on `feast apply`: definitions only, no scripts here. The
parquet file is written by `ragpacer features materialize --demo` (pipeline/features/data.py).
"""

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.STRING,
                  description="A Pacer Bank customer")

customer_stats_source = FileSource(
    name="customer_stats_source",
    path="data/customer_stats.parquet",
    timestamp_field="event_timestamp",
)

customer_stats = FeatureView(
    name="customer_stats",
    entities=[customer],
    ttl=timedelta(days=365),
    schema=[
        Field(name="lifetime_value_eur", dtype=Float64),
        Field(name="tier", dtype=String),
        Field(name="tenure_months", dtype=Int64),
        Field(name="open_tickets", dtype=Int64),
        Field(name="products_held", dtype=Int64),
    ],
    online=True,
    source=customer_stats_source,
)
