"""rankflow: a declarative, scheduled pipeline that keeps a CTR ranking model fresh."""

from rankflow.feast_typeguard import skip_feast_instrumentation

__version__ = "0.1.0"

# Before anything imports Feast: its import instruments ~240 methods with typeguard, several
# seconds of CPU in every process (rankflow/feast_typeguard.py says what is skipped and why).
skip_feast_instrumentation()
