package migrate

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/restore"
	"github.com/lazycr/lazycr/uffd"
)

// memberPages reads the eager pages of the members of a process tree
// other than the root from the fetched image files (their lazy pages come
// from the page server, like the root's).
func memberPages(files map[string][]byte) func(pid uint32) (restore.PageReader, error) {
	return func(pid uint32) (restore.PageReader, error) {
		name := image.PagesFile(pid)
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("the image set has no %s", name)
		}
		return image.NewPagesReader(name, bytes.NewReader(b), int64(len(b)))
	}
}

// treeSpaces puts the root and every other member of a restored tree into
// the handler configuration, each in the space the source gave its image
// pid (its index in WELCOME's pids): one handler serves them all from the
// one page server. A process the source does not serve is refused: its
// lazy pages would have no source.
func treeSpaces(cfg *uffd.HandlerConfig, pids []uint32, root uint32, members []restore.LazyMember) error {
	space := func(pid uint32) (int, error) {
		k, ok := slices.BinarySearch(pids, pid)
		if !ok {
			return 0, fmt.Errorf("restore pid %d lazily: the source serves the memory of pids %v only", pid, pids)
		}
		return k, nil
	}
	k, err := space(root)
	if err != nil {
		return err
	}
	cfg.Space = k
	for _, m := range members {
		k, err := space(m.ImagePID)
		if err != nil {
			return err
		}
		cfg.Members = append(cfg.Members, uffd.Member{FD: m.FD, PID: m.PID, Space: k, Regions: m.Regions})
	}
	return nil
}
