"""One ``Resources`` for the whole test session: the demo index's Edge shard is opened once
(a second open in the same process is refused by its lock) and the knowledge base is
embedded once. conftest closes it when the session ends."""

from ragpacer.pipeline.resources import Resources

RESOURCES = Resources()
