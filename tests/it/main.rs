//! The integration tests, one binary: each module is one area, `common` holds the shared
//! helpers (an in-process bridge, a cluster of real processes, the test databases).

mod common;

mod admin_api;
mod callbacks;
mod check_online;
mod clients_allportal;
mod clients_contract;
mod clients_opentext;
mod clients_streaming;
mod clients_transport;
mod config;
mod connections;
mod console;
mod console_data;
mod crash_points;
mod demo;
mod drain;
mod drift;
mod durability;
mod flows_config;
mod flows_e2e;
mod flows_store;
mod group_commit;
mod ingest_vectors;
mod limits;
mod mapping_values;
mod observability;
mod onboarding;
mod openapi_sync;
mod outage;
mod plan_cli;
mod robustness;
mod roundtrip_allportal;
mod roundtrip_opentext;
mod sim_allportal;
mod sim_opentext;
mod store_suite;
mod teams;
mod tls;
mod values_schema;
mod webhooks_http;
mod worker_suite;
