"""rankflow: a declarative, scheduled pipeline that keeps a CTR ranking model fresh."""

__version__ = "0.1.0"
