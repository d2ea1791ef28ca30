package integration

import "testing"

// TestQA8GoKeepAliveRestored: a Go HTTP server with a kept-alive client
// connection is dumped and restored (qa8 Q1). Go 1.24+ listens with
// MPTCP; a connection it accepts from a plain TCP client fell back to TCP
// and reads SO_RCVLOWAT 0, which setsockopt cannot set (it stores val ?: 1,
// and 0 acts as 1), so every restore or migration of a Go server with an
// open client connection failed with "SO_RCVLOWAT is 1 after setting 0".
func TestQA8GoKeepAliveRestored(t *testing.T) {
	t.Parallel()
	p := start(t, buildGo(t, "qa8_keepalive"))
	var r struct {
		Pid      int `json:"pid"`
		Port     int `json:"port"`
		Protocol int `json:"protocol"`
		Rcvlowat int `json:"rcvlowat"`
	}
	waitReport(t, p, &r)
	t.Logf("listener protocol %d, accepted connection's SO_RCVLOWAT %d", r.Protocol, r.Rcvlowat)
	requireProgress(t, p, "served")

	rp := restoreFrom(t, p, dumpKill(t, p))
	requireProgress(t, rp, "served")
	checkSequence(t, rp, "served")
}
