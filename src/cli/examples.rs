//! The examples of every command, in one table: `--help` shows them (the
//! commands' `after_long_help`) and the man pages render them as their
//! EXAMPLES section, so the two never disagree.

/// One example: the command line and what it does.
pub type Example = (&'static str, &'static str);

/// The examples of a command, by its path (`"check"`, `"graph dump"`;
/// `""` is `corescope` itself).
pub fn of(path: &str) -> &'static [Example] {
    match path {
        "" => &[
            ("corescope demo", "a synthetic database through the whole maintenance cycle, for a first look"),
            ("corescope check --db /var/lib/corescope/meshcore.db", "is the database ready for the CoreScope server, and what is pending"),
            ("corescope migrate --db /var/lib/corescope/meshcore.db", "after an upgrade of CoreScope: bring the schema to the latest target"),
            ("corescope build-edges --db /var/lib/corescope/meshcore.db --max-seconds 50", "what the every-minute timer runs"),
            ("corescope prune --db /var/lib/corescope/meshcore.db --config /etc/corescope/config.json", "what the daily timer runs, with CoreScope's retention settings"),
        ],
        "migrate" => &[
            ("corescope migrate --db /var/lib/corescope/meshcore.db", "bring the schema to the target 'latest' (the default)"),
            ("corescope migrate --db meshcore.db --dry-run", "the plan, with the rows each data step would touch; changes nothing"),
            ("corescope migrate --db meshcore.db --max-seconds 600", "beside the running ingestor: large indexes are built online; stops after 10 minutes, the next run goes on"),
            ("corescope migrate --db meshcore.db --offline", "the ingestor is stopped: build each index with one statement (several times faster)"),
            ("corescope migrate --db meshcore.db --target seed", "only what the CoreScope server of the seed version asserts"),
            ("corescope migrate --db /var/lib/corescope/new.db --create", "a new database: auto_vacuum=INCREMENTAL, WAL, the full schema"),
        ],
        "check" => &[
            ("corescope check --db meshcore.db", "a table: the verdict, the state of every job, the warnings"),
            ("corescope check --db meshcore.db --json", "for CI and scripts: ready, missing, pending_migrations, jobs, warnings"),
            ("corescope check --db meshcore.db -q", "ExecStartPre= of the CoreScope server: the exit code, and one stderr line when not ready"),
            ("corescope check --db meshcore.db --deep", "also the anomaly scans that read whole tables (slow on big files)"),
            ("corescope check --db meshcore.db --strict --allow zero_timestamp", "exit 3 on any warning except one you have decided to live with"),
            ("corescope check --db meshcore.db --integrity", "adds PRAGMA quick_check and foreign_key_check"),
            ("corescope check --db meshcore.db --diff", "only the schema: every difference from the catalog, exit 3 if one breaks CoreScope"),
        ],
        "backfill" => &[
            ("corescope backfill --db meshcore.db", "all four tasks, in their order"),
            ("corescope backfill --db meshcore.db from-pubkey path-json", "only some tasks"),
            ("corescope backfill --db meshcore.db --max-seconds 900", "an hourly timer slot; the next run resumes"),
            ("corescope backfill --db meshcore.db --dry-run", "the rows each task would update; changes nothing"),
            ("corescope backfill --db meshcore.db resolved-path --reset resolved-path", "retry unresolved paths after build-edges"),
            ("corescope backfill --db meshcore.db observer-blacklist --observer 7D1D...", "soft-delete an observer (besides the config's observerBlacklist)"),
        ],
        "build-edges" => &[
            ("corescope build-edges --db meshcore.db", "count the observations not yet counted (every 60 s from a timer)"),
            ("corescope build-edges --db meshcore.db --max-seconds 50", "stay inside the timer's minute"),
            ("corescope build-edges --db meshcore.db --rebuild", "recompute from all observations and swap the table in atomically"),
        ],
        "prune" => &[
            ("corescope prune --db meshcore.db --config /etc/corescope/config.json", "retention.* from CoreScope's config"),
            ("corescope prune --db meshcore.db --dry-run --now 2026-05-17T00:00:00Z", "exactly what a real run at that time would delete; changes nothing"),
            ("corescope prune --db meshcore.db --only packets --packet-days 30", "only packets older than 30 days"),
            ("corescope prune --db meshcore.db --skip edges --truncate-wal", "everything but edges, then truncate the WAL if no reader is active"),
        ],
        "vacuum" => &[
            ("corescope vacuum --db meshcore.db", "incremental vacuum and a WAL checkpoint"),
            ("corescope vacuum --db meshcore.db --full --backup meshcore-before-vacuum.db", "once, in a maintenance window: a backup, then auto_vacuum NONE to INCREMENTAL with a full VACUUM"),
        ],
        "backup" => &[
            ("corescope backup --db /var/lib/corescope/meshcore.db /var/backups/meshcore-$(date +%F).db", "a consistent copy while the ingestor writes, checked with quick_check"),
            ("corescope migrate --db meshcore.db --backup meshcore-before-migrate.db", "take the copy first, then migrate (also: vacuum --full --backup PATH)"),
        ],
        "graph" => &[
            ("corescope graph dump --db meshcore.db --format dot | dot -Tsvg > mesh.svg", "a map of the mesh (Graphviz; the file names its layout engine)"),
            ("corescope graph stats --db meshcore.db", "nodes, edges, components, degrees, hubs"),
        ],
        "graph dump" => &[
            ("corescope graph dump --db meshcore.db --format dot | dot -Tsvg > mesh.svg", "a map: nodes at their positions from latitude and longitude, the rest beside their neighbours"),
            ("corescope graph dump --db meshcore.db --format graphml -o mesh.graphml", "for Gephi or networkx"),
            ("corescope graph dump --db meshcore.db --format geojson --since 7d -o mesh.geojson", "edges seen in the last week, for a map viewer"),
            ("corescope graph dump --db meshcore.db --format csv --nodes-csv nodes.csv -o edges.csv", "edges and nodes as CSV"),
            ("corescope graph dump --db meshcore.db --node 7d1d --hops 2 --min-count 3", "two hops around a node (key prefix or name)"),
        ],
        "graph stats" => &[
            ("corescope graph stats --db meshcore.db", "nodes, edges, components, degree distribution, hubs, edges by age"),
            ("corescope graph stats --db meshcore.db --since 24h --top 20", "the last day's graph and its 20 best-connected nodes"),
        ],
        "synth" => &[
            ("corescope synth --db /tmp/mesh.db --transmissions 250000 --observations 1000000 --seed 7", "a large, realistic database"),
            ("corescope synth --db /tmp/old.db --schema legacy", "like an old capture, for trying migrate"),
            ("corescope synth --db /tmp/work.db --null-from-pubkey --null-path-json 0.2 --anomalies", "work for every backfill, and the anomalies check reports"),
        ],
        "demo" => &[
            ("corescope demo", "in a new directory under the system's temporary directory"),
            ("corescope demo --dir ./demo", "in ./demo"),
        ],
        "schema" => &[
            ("corescope schema --target latest", "the schema migrate --create builds, as SQL"),
            ("corescope schema --target seed --format json", "the seed target as JSON"),
            ("corescope schema --from-db meshcore.db", "a database's actual schema, in the same normalised form"),
            ("diff <(corescope schema) <(corescope schema --from-db meshcore.db)", "what a database lacks or has in addition"),
        ],
        "completions" => &[
            ("corescope completions bash > /etc/bash_completion.d/corescope", "bash"),
            ("corescope completions zsh > \"${fpath[1]}/_corescope\"", "zsh"),
        ],
        _ => &[],
    }
}

/// The examples of `path` as the end of its `--help` ("Examples:" and one
/// indented block per example).
pub fn help(path: &str) -> String {
    let mut s = String::from("Examples:\n");
    for (line, what) in of(path) {
        s.push_str(&format!("  {line}\n      {what}\n"));
    }
    s.truncate(s.trim_end().len());
    s
}

/// `notes`, then the examples of `path`.
pub fn help_with(notes: &str, path: &str) -> String {
    format!("{notes}\n\n{}", help(path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_example_calls_its_command() {
        for path in [
            "migrate",
            "check",
            "backfill",
            "build-edges",
            "prune",
            "vacuum",
            "graph dump",
            "graph stats",
            "synth",
            "demo",
            "schema",
            "completions",
        ] {
            assert!(!super::of(path).is_empty(), "{path}");
            for (line, _) in super::of(path) {
                assert!(
                    line.contains(&format!("corescope {path}")),
                    "{path}: {line}"
                );
            }
        }
    }
}
