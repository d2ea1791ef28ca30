package image

import (
	"errors"
	"testing"

	"github.com/lazycr/lazycr/image/pb"
)

func TestValidateSeccomp(t *testing.T) {
	ok := &pb.SeccompFilter{Program: make([]byte, 8)}
	for _, tc := range []struct {
		name string
		t    *pb.Thread
		good bool
	}{
		{"disabled", &pb.Thread{}, true},
		{"strict", &pb.Thread{SeccompMode: 1}, true},
		{"filter", &pb.Thread{SeccompMode: 2, SeccompFilters: []*pb.SeccompFilter{ok, ok}}, true},
		{"longest program", &pb.Thread{SeccompMode: 2, SeccompFilters: []*pb.SeccompFilter{{Program: make([]byte, 8*SeccompMaxInsns)}}}, true},
		{"filter mode without filters", &pb.Thread{SeccompMode: 2}, false},
		{"strict with filters", &pb.Thread{SeccompMode: 1, SeccompFilters: []*pb.SeccompFilter{ok}}, false},
		{"unknown mode", &pb.Thread{SeccompMode: 3}, false},
		{"partial instruction", &pb.Thread{SeccompMode: 2, SeccompFilters: []*pb.SeccompFilter{{Program: make([]byte, 12)}}}, false},
		{"empty program", &pb.Thread{SeccompMode: 2, SeccompFilters: []*pb.SeccompFilter{{}}}, false},
		{"program too long", &pb.Thread{SeccompMode: 2, SeccompFilters: []*pb.SeccompFilter{{Program: make([]byte, 8*SeccompMaxInsns+8)}}}, false},
	} {
		err := ValidateSeccomp(tc.t)
		if tc.good != (err == nil) {
			t.Errorf("%s: ValidateSeccomp = %v, want valid %v", tc.name, err, tc.good)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v is not ErrInvalid", tc.name, err)
		}
	}
}
