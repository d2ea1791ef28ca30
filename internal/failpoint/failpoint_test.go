package failpoint

import "testing"

func TestCheckDefault(t *testing.T) {
	if Enabled {
		t.Skip("built with -tags failpoint")
	}
	if err := Check("restore.fds"); err != nil {
		t.Fatalf("Check without the failpoint tag: %v", err)
	}
}
