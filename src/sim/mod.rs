//! Stateful simulators of 4ALLPORTAL and OpenText, for tests and `demo`. Never used by production code paths.
