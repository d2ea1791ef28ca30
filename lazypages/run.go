package lazypages

// PageSize is the page size lazy pages are kept in (x86-64 base pages).
const PageSize = 4096

// Address spaces (see the package doc, "Keyed addresses").
const (
	// SpaceShift is where the space number starts in a keyed address.
	SpaceShift = 56
	// MaxSpaces is how many spaces (tree members) keyed addresses hold.
	MaxSpaces = 1 << (64 - SpaceShift)
	// SpaceSize is the size of one space: every dump-time address of a
	// space is below it.
	SpaceSize = uint64(1) << SpaceShift
)

// SpaceAddr keys dump-time address addr (< SpaceSize) in space.
func SpaceAddr(space int, addr uint64) uint64 { return uint64(space)<<SpaceShift | addr }

// SplitSpace splits a keyed address into its space and its dump-time
// address.
func SplitSpace(key uint64) (space int, addr uint64) {
	return int(key >> SpaceShift), key & (SpaceSize - 1)
}

// Run is a run of pages [Addr, Addr+Npages*PageSize).
type Run struct {
	Addr   uint64
	Npages uint64
}

// End is the address just past the run.
func (r Run) End() uint64 { return r.Addr + r.Npages*PageSize }
