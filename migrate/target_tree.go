package migrate

import (
	"bytes"
	"fmt"

	"github.com/lazycr/lazycr/image"
	"github.com/lazycr/lazycr/restore"
)

// memberPages reads the eager pages of the members of a process tree
// other than the root from the fetched image files: their memory is all
// in the skeleton (only the root's is served lazily).
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
