// Package integration holds the end-to-end tests of the lazycr CLI: they
// build real workloads (C programs in testdata/progs, Go programs in
// testdata/goprogs) at test time, run them, checkpoint them with the lazycr
// binary and check the image set and the workloads' own reports. It has no
// API; product code never imports it.
package integration
