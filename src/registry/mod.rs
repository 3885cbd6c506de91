//! A thin client for the OCI distribution API.
