package restore

import "testing"

func TestParseTermiosPolicy(t *testing.T) {
	for in, want := range map[string]TermiosPolicy{"": TermiosAuto, "auto": TermiosAuto, "dump": TermiosDump, "keep": TermiosKeep} {
		got, err := ParseTermiosPolicy(in)
		if err != nil || got != want {
			t.Errorf("ParseTermiosPolicy(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := ParseTermiosPolicy("raw"); err == nil {
		t.Error("ParseTermiosPolicy(\"raw\") accepted")
	}
}

// TestMapSession: with --shell-job only the job's session is replaced by
// lazycr's; a member leading a session of its own keeps it, and without a
// job (or when reattaching to the same terminal) nothing changes.
func TestMapSession(t *testing.T) {
	j := &shellJob{attach: true, imageSid: 100, sid: 7}
	for _, c := range []struct {
		job      *shellJob
		in, want sessionIDs
	}{
		{j, sessionIDs{sid: 100, pgid: 120}, sessionIDs{sid: 7, pgid: 120}},
		{j, sessionIDs{sid: 130, pgid: 130}, sessionIDs{sid: 130, pgid: 130}},
		{&shellJob{imageSid: 100, sid: 7}, sessionIDs{sid: 100, pgid: 120}, sessionIDs{sid: 100, pgid: 120}},
		{nil, sessionIDs{sid: 100, pgid: 120}, sessionIDs{sid: 100, pgid: 120}},
	} {
		if got := c.job.mapSession(c.in); got != c.want {
			t.Errorf("mapSession(%+v) with %+v = %+v, want %+v", c.in, c.job, got, c.want)
		}
	}
	if (*shellJob)(nil).terminal() != nil || (&shellJob{}).terminal() != nil {
		t.Error("terminal() without --shell-job is not nil")
	}
}
