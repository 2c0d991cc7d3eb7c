-- The dependency index: which 4ALLPORTAL objects (`module/id`: an item, an asset, a related
-- object) a flow's run for one business object read besides the object itself. A change of
-- such an object enqueues a resync of exactly the runs that used it. Each applied run
-- replaces its rows, so entries it no longer uses vanish.
CREATE TABLE dependencies (
    dependency TEXT NOT NULL,                         -- `module/id` of the object used
    module     TEXT NOT NULL,                         -- its module (polled for changes)
    flow       TEXT NOT NULL,
    object_key TEXT NOT NULL,                         -- the run's business object
    PRIMARY KEY (dependency, flow, object_key)
);
CREATE INDEX dependencies_dependent ON dependencies (flow, object_key);
CREATE INDEX dependencies_module ON dependencies (module);
