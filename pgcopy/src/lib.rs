//! `pgcopy`: PostgreSQL binary COPY encoding and streaming bulk load.
#![warn(missing_docs)]
