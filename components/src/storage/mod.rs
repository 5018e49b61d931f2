//! Sinks that keep data: files and databases.
