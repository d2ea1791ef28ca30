// Package stats is the schema of the machine-readable statistics file that
// `lazycr dump --stats-file F` and `lazycr restore --stats-file F` write
// when they end, on success or failure: one JSON object (File), written
// atomically (a temporary file renamed into place), mode 0600.
//
// Conventions: durations are numbers of milliseconds with the unit in the
// key ("frozen_ms": 12.345678, nanosecond resolution in the fraction);
// sizes are bytes ("*_bytes") or 4 KiB pages ("pages_*", "*_pages");
// throughput is GB/s with GB = 1e9 bytes ("*_gb_per_s"). "error" is
// present exactly when the command failed; a section the command did not
// reach is absent. Fields are only ever added (Version says which set).
//
// A lazy migration's target, for example (abridged):
//
//	{
//	  "version": 1,
//	  "command": "restore --lazy-from",
//	  "pid": 4242,
//	  "start": "2026-12-07T06:40:00.123456789Z",
//	  "total_ms": 812.5,
//	  "restore": {"threads": 1, "load_ms": 0.41, … "total_ms": 9.8, "eager_bytes": 69632},
//	  "lazy": {
//	    "freeze_to_resume_ms": 31.2, "fetch_ms": 3.1,
//	    "push_phase_ms": 702.4, "push_phase_bytes": 1073741824, "push_phase_gb_per_s": 1.53,
//	    "pages_fault": 12, "pages_fault_around": 180, "pages_push": 261952,
//	    "pages_source_zero": 0, "pages_zero": 0,
//	    "faults": 14, "faults_by": {"request": 12, "push": 2},
//	    "fault_p50_ms": 0.081, "fault_p90_ms": 0.2, "fault_p99_ms": 0.9, "fault_max_ms": 0.9,
//	    "requests": 12, "reconnects": 0, "poisoned": 0, "lost": 0, …
//	  }
//	}
//
// The fields and their meaning are documented on File, Dump, Serve,
// Restore and Lazy. Decode reads a file back (bounded, unknown fields
// refused), for the benchmarks and tests.
package stats
