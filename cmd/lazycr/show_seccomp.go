package main

import (
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/image/pb"
)

// seccompText is a thread's seccomp column of `lazycr show`: "-",
// "strict", or "N filters" with how many of them log
// (SECCOMP_FILTER_FLAG_LOG).
func seccompText(t *pb.Thread) string {
	switch t.SeccompMode {
	case image.SeccompModeDisabled:
		return "-"
	case image.SeccompModeStrict:
		return "strict"
	case image.SeccompModeFilter:
		logs := 0
		for _, f := range t.SeccompFilters {
			if f.Flags&2 != 0 { // SECCOMP_FILTER_FLAG_LOG
				logs++
			}
		}
		s := fmt.Sprintf("%d filters", len(t.SeccompFilters))
		if logs > 0 {
			s += fmt.Sprintf(" (%d log)", logs)
		}
		return s
	}
	return fmt.Sprintf("mode %d", t.SeccompMode)
}
