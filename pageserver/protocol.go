package pageserver

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/lazycr/lazycr/lazypages"
	"github.com/lazycr/lazycr/uffd"
)

// Protocol constants and limits (see the package doc).
const (
	FrameVersion = 1 // the header's version byte
	// ProtocolVersion is the version HELLO and WELCOME carry. 2: every
	// page address on the wire names its process (pid in the image), so
	// one session serves a whole process tree. 3: ZERO frames stand for
	// pages the source read as all zero bytes. 4: ABSENT frames name the
	// lazy pages the source never had.
	ProtocolVersion = 4
	HeaderSize      = 16 // frame header bytes
	PageSize        = uffd.PageSize
	MaxFramePages   = 2048 // pages in one PAGES frame or REQUEST (8 MiB)
	MaxPayload      = MaxFramePages*PageSize + 64
	// MaxPushBytes bounds the page bytes of one pushed frame: the source
	// answers a request between two frames (its reader writes the answer
	// as soon as the frame being written is out), so an answer never waits
	// behind more than one.
	MaxPushBytes = 64 << 10
	// PushWindow is the push credit a connection starts with: the most
	// pushed bytes in flight between the server and the handler's
	// installing them (the client returns credit as the handler releases
	// pushed frames, see CREDIT). Answers never wait behind more than
	// what of it is still in the socket. Measured (BenchmarkLazyTable, 1
	// GiB, 2 vCPUs, interleaved runs): a 4 MiB window pushed 10-20% faster
	// and doubled the process's fault p99 (about 2 → 4.5 ms, also with
	// GOMAXPROCS=4), an 8 MiB one 5-9 ms, whatever the frame size (64 KiB
	// to 1 MiB).
	PushWindow = 1 << 20
	MaxCredit  = 64 << 20 // bytes one CREDIT frame may grant
	MaxRuns    = 1 << 19  // runs in WELCOME or ACK
	// MaxFiles: a tree of MaxProcesses processes has 3 files each, and a
	// few of its own.
	MaxFiles    = 4096
	MaxFileName = 64
	// MaxImagesSize bounds the image files' total any IMAGES may announce
	// (the decoders' bound). It no longer limits what migrates: the
	// source streams its pages files (ServerConfig.Streams) and the
	// target accepts what it can hold (checkHold, from MemAvailable); a
	// skeleton holds every eager page, shared memory included (1 GiB of
	// postgres shared_buffers is 1 GiB of skeleton). 1 TiB, as
	// image.MaxPagesSize.
	MaxImagesSize = 1 << 40
	ChunkSize     = 1 << 20
	MaxToken      = 256
	MaxMessage    = 1024
	// MaxAddr bounds every page address on the wire (run ends included):
	// TASK_SIZE of x86-64 with 5-level paging, so that a process's pages
	// fit below uffd.SpaceSize and spaces never touch.
	MaxAddr = uffd.SpaceSize - PageSize
	// MaxProcesses is how many processes one session serves.
	MaxProcesses = uffd.MaxSpaces
	// pagesHead is the PAGES payload before the page data: pid and address.
	pagesHead = 12
	runSize   = 20 // a run on the wire: pid u32, addr u64, npages u64
)

var frameMagic = [2]byte{'L', 'Z'}

// Errors. Decoders wrap ErrProtocol or ErrOutOfRange; the others come from
// Serve and the Client.
var (
	// ErrProtocol: a frame is malformed, too large or unexpected.
	ErrProtocol = errors.New("page server protocol violation")
	// ErrOutOfRange: a page range lies outside the migrated lazy runs.
	ErrOutOfRange = errors.New("page range outside the lazy runs")
	// ErrVersion: the peer speaks another protocol version.
	ErrVersion = errors.New("page server protocol version mismatch")
	// ErrRefused: the source refused this client (token, session or busy).
	ErrRefused = errors.New("refused by the page server")
	// ErrGaveUp: the target did not reconnect within the reconnect timeout;
	// the pages it lacks are only in the frozen process, which the caller
	// keeps (an Adopted server can serve them again).
	ErrGaveUp = errors.New("target did not reconnect in time")
	// ErrRestoreFailed: the target sent FAIL: the restore failed.
	ErrRestoreFailed = errors.New("target reported the restore failed")
	// ErrMemoryGone: the frozen process whose memory is served is gone
	// (killed on the source): its lazy pages are lost for good. A Memory
	// says so by wrapping it; Serve then ends the session at once rather
	// than wait for a target whose every reconnect would fail the same way.
	ErrMemoryGone = errors.New("the process on the source is gone")
	// ErrLostBeforeResume: the connection dropped before the target resumed
	// the process; the caller should release the frozen process.
	ErrLostBeforeResume = errors.New("connection lost before the target resumed")
	// ErrClosed: the client was closed.
	ErrClosed = net.ErrClosed
	// ErrTargetAborted: the target sent ABORT after RESUMED: it killed its
	// copy on purpose. The original is the only copy: keep it stopped.
	ErrTargetAborted = errors.New("target aborted and killed its copy of the process")
)

// Type is a frame type.
type Type uint8

// Frame types.
const (
	TypeHello     Type = 1 + iota // client → server
	TypeWelcome                   // server → client
	TypeGetImages                 // client → server
	TypeImages                    // server → client
	TypeChunk                     // server → client
	TypeResumed                   // client → server
	TypeResumedOK                 // server → client
	TypeRequest                   // client → server
	TypePages                     // server → client
	TypeAck                       // client → server
	TypeDone                      // both ways
	TypeFail                      // client → server
	TypeError                     // server → client
	TypeCredit                    // client → server
	// TypeAbort (client → server, after RESUMED; payload: UTF-8 reason,
	// as FAIL): the target killed its copy of the process on purpose (the
	// user aborted). The original, frozen on the source, is now the only
	// copy: the source must keep it stopped (never release it, never kill
	// it) so that it can be served again.
	TypeAbort
	// TypeZero (server → client, id as PAGES: the request answered, 0 if
	// pushed; payload: pid u32, addr u64, npages u32) stands for a PAGES
	// frame whose pages the source read and found all zero bytes: the
	// target maps them with UFFDIO_ZEROPAGE and no data crosses the wire.
	TypeZero
	// TypeHelloReplies (client → server, payload as HELLO, session ≠ 0)
	// opens the replies connection of a session whose connection is
	// served: REQUEST frames on it are answered on it, never behind the
	// background push of the session's connection.
	TypeHelloReplies
	// TypeRepliesOK (server → client, empty) accepts a replies connection.
	TypeRepliesOK
	// TypeExited (client → server, after RESUMED; payload: UTF-8 text, as
	// FAIL) is DONE for a process that exited on the target before all its
	// lazy pages were needed: the migration is over, the source ends the
	// original and answers DONE. The text ("pid N exited (status S) …")
	// is for the source's log.
	TypeExited
	// TypeAbsent (server → client, after RESUMED_OK; payload: runs as in
	// ACK, at most MaxAbsentRuns, each inside the lazy runs) names lazy
	// pages the source never had: the frozen process never populated them
	// (not present, not swapped out) or they map the shared zero page, so
	// they read as zeros there. The source finds them after the resume
	// (a whole lazy VMA is announced before anyone scanned it) and never
	// pushes them; the target needs them no more: a fault there is
	// answered with a zero page, as at the source.
	TypeAbsent
	typeEnd
)

var typeNames = [...]string{"", "HELLO", "WELCOME", "GET_IMAGES", "IMAGES", "CHUNK", "RESUMED", "RESUMED_OK", "REQUEST", "PAGES", "ACK", "DONE", "FAIL", "ERROR", "CREDIT", "ABORT", "ZERO", "HELLO_REPLIES", "REPLIES_OK", "EXITED", "ABSENT"}

func (t Type) String() string {
	if t > 0 && t < typeEnd {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Header is a decoded frame header.
type Header struct {
	Type   Type
	Length uint32 // payload bytes
	ID     uint64 // request id, 0 if none
}

// Append appends the 16-byte encoding of h to b.
func (h Header) Append(b []byte) []byte {
	b = append(b, frameMagic[0], frameMagic[1], FrameVersion, byte(h.Type))
	b = binary.LittleEndian.AppendUint32(b, h.Length)
	return binary.LittleEndian.AppendUint64(b, h.ID)
}

// fixedSize is the exact payload size of fixed-size frames, -1 otherwise.
func fixedSize(t Type) int {
	switch t {
	case TypeGetImages, TypeResumed, TypeResumedOK, TypeDone, TypeRepliesOK:
		return 0
	case TypeRequest, TypeZero:
		return 16
	}
	return -1
}

// DecodeHeader decodes and checks a frame header: magic, version, a known
// type, a payload within MaxPayload and of the size the type needs.
func DecodeHeader(b []byte) (*Header, error) {
	if len(b) != HeaderSize {
		return nil, fmt.Errorf("%w: frame header of %d bytes, need %d", ErrProtocol, len(b), HeaderSize)
	}
	if b[0] != frameMagic[0] || b[1] != frameMagic[1] {
		return nil, fmt.Errorf("%w: bad frame magic %#02x%02x", ErrProtocol, b[0], b[1])
	}
	if b[2] != FrameVersion {
		return nil, fmt.Errorf("%w: frame version %d, this lazycr speaks %d", ErrVersion, b[2], FrameVersion)
	}
	h := &Header{Type: Type(b[3]), Length: binary.LittleEndian.Uint32(b[4:8]), ID: binary.LittleEndian.Uint64(b[8:16])}
	if h.Type == 0 || h.Type >= typeEnd {
		return nil, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, b[3])
	}
	if h.Length > MaxPayload {
		return nil, fmt.Errorf("%w: %s payload of %d bytes exceeds %d", ErrProtocol, h.Type, h.Length, MaxPayload)
	}
	if n := fixedSize(h.Type); n >= 0 && int(h.Length) != n {
		return nil, fmt.Errorf("%w: %s payload of %d bytes, expected %d", ErrProtocol, h.Type, h.Length, n)
	}
	switch h.Type {
	case TypePages:
		if h.Length < pagesHead+PageSize || (h.Length-pagesHead)%PageSize != 0 {
			return nil, fmt.Errorf("%w: PAGES payload of %d bytes is not a pid, an address and whole pages", ErrProtocol, h.Length)
		}
	case TypeRequest:
		if h.ID == 0 {
			return nil, fmt.Errorf("%w: REQUEST with id 0", ErrProtocol)
		}
	case TypeChunk:
		if h.Length == 0 || h.Length > ChunkSize {
			return nil, fmt.Errorf("%w: CHUNK of %d bytes (1 to %d)", ErrProtocol, h.Length, ChunkSize)
		}
	case TypeFail, TypeError, TypeExited:
		if h.Length > MaxMessage {
			return nil, fmt.Errorf("%w: %s message of %d bytes exceeds %d", ErrProtocol, h.Type, h.Length, MaxMessage)
		}
	}
	return h, nil
}

// reader is a little-endian cursor over a payload that records the first
// shortfall.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u8() uint8 {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u16() uint16 {
	if len(r.b) < 2 {
		r.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint16(r.b)
	r.b = r.b[2:]
	return v
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// done reports a shortfall or trailing bytes as an error about what.
func (r *reader) done(what string) error {
	if r.bad {
		return fmt.Errorf("%w: %s payload is truncated", ErrProtocol, what)
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d bytes after the %s payload", ErrProtocol, len(r.b), what)
	}
	return nil
}

// Hello opens (session 0) or resumes a session.
type Hello struct {
	Version uint32
	Session uint64
	Token   []byte
}

// Append appends the payload encoding of m to b.
func (m *Hello) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, m.Version)
	b = binary.LittleEndian.AppendUint64(b, m.Session)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(m.Token)))
	return append(b, m.Token...)
}

// DecodeHello decodes a HELLO payload.
func DecodeHello(p []byte) (*Hello, error) {
	r := reader{b: p}
	m := &Hello{Version: r.u32(), Session: r.u64()}
	n := int(r.u16())
	if n > MaxToken {
		return nil, fmt.Errorf("%w: HELLO token of %d bytes exceeds %d", ErrProtocol, n, MaxToken)
	}
	m.Token = slices.Clone(r.bytes(n))
	if err := r.done("HELLO"); err != nil {
		return nil, err
	}
	if m.Token == nil {
		m.Token = []byte{}
	}
	return m, nil
}

// Welcome accepts a client into a session and announces the processes
// and their lazy runs.
type Welcome struct {
	Version   uint32
	Session   uint64
	LazyPages uint64
	LazyBytes uint64
	// Pids are the processes served (pids in the image), ascending: the
	// process Pids[k] is space k of the keyed addresses in Runs.
	Pids []uint32
	Runs []uffd.Run // keyed (uffd.SpaceAddr), sorted, disjoint, not adjacent
}

// Append appends the payload encoding of m to b.
func (m *Welcome) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, m.Version)
	b = binary.LittleEndian.AppendUint64(b, m.Session)
	b = binary.LittleEndian.AppendUint64(b, m.LazyPages)
	b = binary.LittleEndian.AppendUint64(b, m.LazyBytes)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Pids)))
	for _, pid := range m.Pids {
		b = binary.LittleEndian.AppendUint32(b, pid)
	}
	return appendRuns(b, m.Runs, m.Pids)
}

// appendRuns appends keyed runs in their wire form (pid, address, pages).
func appendRuns(b []byte, runs []uffd.Run, pids []uint32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(runs)))
	for _, r := range runs {
		pid, addr := wireAddr(pids, r.Addr)
		b = binary.LittleEndian.AppendUint32(b, pid)
		b = binary.LittleEndian.AppendUint64(b, addr)
		b = binary.LittleEndian.AppendUint64(b, r.Npages)
	}
	return b
}

// wireAddr splits a keyed address into its process's pid and address (pid
// 0xffffffff for a space pids does not name: no such pid exists).
func wireAddr(pids []uint32, key uint64) (uint32, uint64) {
	sp, addr := uffd.SplitSpace(key)
	if sp < len(pids) {
		return pids[sp], addr
	}
	return ^uint32(0), addr
}

// keyOf keys address addr of process pid, if pids names it.
func keyOf(pids []uint32, pid uint32, addr uint64) (uint64, bool) {
	sp, ok := slices.BinarySearch(pids, pid)
	if !ok || addr >= uffd.SpaceSize {
		return 0, false
	}
	return uffd.SpaceAddr(sp, addr), true
}

// readPids reads a WELCOME's process table: 1 to MaxProcesses pids,
// strictly ascending.
func readPids(r *reader) ([]uint32, error) {
	n := r.u32()
	if n == 0 || n > MaxProcesses {
		return nil, fmt.Errorf("%w: WELCOME names %d processes (1 to %d)", ErrProtocol, n, MaxProcesses)
	}
	if uint64(len(r.b)) < uint64(n)*4 {
		return nil, fmt.Errorf("%w: WELCOME payload is truncated", ErrProtocol)
	}
	pids := make([]uint32, n)
	for i := range pids {
		pids[i] = r.u32()
		if i > 0 && pids[i] <= pids[i-1] {
			return nil, fmt.Errorf("%w: WELCOME pid %d is not above the previous %d", ErrProtocol, pids[i], pids[i-1])
		}
	}
	return pids, nil
}

// readRuns reads a wire run list into keyed runs; strict demands sorted,
// disjoint, non-adjacent runs (the canonical WELCOME form), otherwise they
// only must be disjoint and sorted. A pid pids does not name is out of
// range.
func readRuns(r *reader, what string, strict bool, pids []uint32) ([]uffd.Run, error) {
	n := r.u32()
	if n > MaxRuns {
		return nil, fmt.Errorf("%w: %s lists %d runs, limit %d", ErrProtocol, what, n, MaxRuns)
	}
	if uint64(len(r.b)) < uint64(n)*runSize {
		return nil, fmt.Errorf("%w: %s payload is truncated", ErrProtocol, what)
	}
	runs := make([]uffd.Run, n)
	var prevEnd uint64
	for i := range runs {
		pid, addr, npages := r.u32(), r.u64(), r.u64()
		if err := checkRun(uffd.Run{Addr: addr, Npages: npages}); err != nil {
			return nil, fmt.Errorf("%s: pid %d: %w", what, pid, err)
		}
		key, ok := keyOf(pids, pid, addr)
		if !ok {
			return nil, fmt.Errorf("%w: %s: pid %d is not served in this session", ErrOutOfRange, what, pid)
		}
		run := uffd.Run{Addr: key, Npages: npages}
		if i > 0 && (run.Addr < prevEnd || strict && run.Addr == prevEnd) {
			return nil, fmt.Errorf("%w: %s run at pid %d %#x is not after the previous one", ErrProtocol, what, pid, addr)
		}
		prevEnd = run.End()
		runs[i] = run
	}
	return runs, nil
}

// checkRun checks a wire run is non-empty, page-aligned and ends at most
// at MaxAddr.
func checkRun(r uffd.Run) error {
	if r.Addr%PageSize != 0 {
		return fmt.Errorf("%w: address %#x is not page-aligned", ErrProtocol, r.Addr)
	}
	if r.Npages == 0 || r.Addr > MaxAddr || r.Npages > (MaxAddr-r.Addr)/PageSize {
		return fmt.Errorf("%w: run at %#x of %d pages is empty or ends above %#x", ErrProtocol, r.Addr, r.Npages, uint64(MaxAddr))
	}
	return nil
}

// DecodeWelcome decodes a WELCOME payload. Whether its version is the one
// this lazycr speaks is for the caller to check (it says so, naming both).
func DecodeWelcome(p []byte) (*Welcome, error) {
	r := reader{b: p}
	m := &Welcome{Version: r.u32(), Session: r.u64(), LazyPages: r.u64(), LazyBytes: r.u64()}
	if r.bad {
		return nil, r.done("WELCOME")
	}
	pids, err := readPids(&r)
	if err != nil {
		return nil, err
	}
	runs, err := readRuns(&r, "WELCOME", true, pids)
	if err != nil {
		if errors.Is(err, ErrOutOfRange) {
			err = fmt.Errorf("%w: %w", ErrProtocol, err)
		}
		return nil, err
	}
	if err := r.done("WELCOME"); err != nil {
		return nil, err
	}
	m.Pids, m.Runs = pids, runs
	if m.Session == 0 {
		return nil, fmt.Errorf("%w: WELCOME with session 0", ErrProtocol)
	}
	var total uint64
	for _, run := range runs {
		total += run.Npages // runs are disjoint in a 64-bit space: no overflow of the page count
	}
	if total != m.LazyPages || m.LazyBytes != total*PageSize {
		return nil, fmt.Errorf("%w: WELCOME announces %d pages (%d bytes) but its runs hold %d", ErrProtocol, m.LazyPages, m.LazyBytes, total)
	}
	return m, nil
}

// FileEntry names one image file in an IMAGES manifest.
type FileEntry struct {
	Name string
	Size uint64
}

// Images is the manifest of the image files; their contents follow in
// CHUNK frames.
type Images struct {
	Files []FileEntry
}

// Append appends the payload encoding of m to b.
func (m *Images) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Files)))
	for _, f := range m.Files {
		b = append(b, byte(len(f.Name)))
		b = append(b, f.Name...)
		b = binary.LittleEndian.AppendUint64(b, f.Size)
	}
	return b
}

// Total is the number of bytes the CHUNK frames carry.
func (m *Images) Total() uint64 {
	var t uint64
	for _, f := range m.Files {
		t += f.Size
	}
	return t
}

// checkFileName refuses names that are not one plain path element.
func checkFileName(name string) error {
	if name == "" || len(name) > MaxFileName || name == "." || name == ".." ||
		strings.ContainsAny(name, "/\\\x00") || strings.Contains(name, "..") || !utf8.ValidString(name) {
		return fmt.Errorf("%w: image file name %q is not a plain file name of at most %d bytes", ErrProtocol, name, MaxFileName)
	}
	return nil
}

// checkImages checks a manifest's names and sizes.
func checkImages(files []FileEntry) error {
	if len(files) > MaxFiles {
		return fmt.Errorf("%w: %d image files, limit %d", ErrProtocol, len(files), MaxFiles)
	}
	var total uint64
	seen := make(map[string]bool, len(files))
	for _, f := range files {
		if err := checkFileName(f.Name); err != nil {
			return err
		}
		if seen[f.Name] {
			return fmt.Errorf("%w: image file %q listed twice", ErrProtocol, f.Name)
		}
		seen[f.Name] = true
		if f.Size > MaxImagesSize || total+f.Size > MaxImagesSize {
			return fmt.Errorf("%w: image files exceed %d bytes at %q", ErrProtocol, MaxImagesSize, f.Name)
		}
		total += f.Size
	}
	return nil
}

// DecodeImages decodes an IMAGES payload.
func DecodeImages(p []byte) (*Images, error) {
	r := reader{b: p}
	n := r.u32()
	if n > MaxFiles {
		return nil, fmt.Errorf("%w: %d image files, limit %d", ErrProtocol, n, MaxFiles)
	}
	m := &Images{Files: make([]FileEntry, 0, n)}
	for range n {
		name := r.bytes(int(r.u8()))
		size := r.u64()
		if r.bad {
			break
		}
		m.Files = append(m.Files, FileEntry{Name: string(name), Size: size})
	}
	if err := r.done("IMAGES"); err != nil {
		return nil, err
	}
	if err := checkImages(m.Files); err != nil {
		return nil, err
	}
	return m, nil
}

// Request asks for npages pages at Addr of process Pid; the id is in the
// frame header.
type Request struct {
	Pid    uint32
	Addr   uint64
	Npages uint32
}

// Append appends the payload encoding of m to b.
func (m *Request) Append(b []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, m.Pid)
	b = binary.LittleEndian.AppendUint64(b, m.Addr)
	return binary.LittleEndian.AppendUint32(b, m.Npages)
}

// DecodeRequest decodes a REQUEST payload. Whether the process and range
// are migrated is for the caller to check (Ranges.Key, Ranges.Check), so
// that it can refuse the one request and keep the connection.
func DecodeRequest(p []byte) (*Request, error) {
	r := reader{b: p}
	m := &Request{Pid: r.u32(), Addr: r.u64(), Npages: r.u32()}
	if err := r.done("REQUEST"); err != nil {
		return nil, err
	}
	if m.Npages == 0 || m.Npages > MaxFramePages {
		return nil, fmt.Errorf("%w: REQUEST for %d pages (1 to %d)", ErrProtocol, m.Npages, MaxFramePages)
	}
	if err := checkRun(uffd.Run{Addr: m.Addr, Npages: uint64(m.Npages)}); err != nil {
		return nil, fmt.Errorf("REQUEST: %w", err)
	}
	return m, nil
}

// AppendCredit appends a CREDIT payload: the handler has installed (or
// dropped) n more pushed bytes, so the server may push n more.
func AppendCredit(b []byte, n uint64) []byte { return binary.LittleEndian.AppendUint64(b, n) }

// DecodeCredit decodes a CREDIT payload.
func DecodeCredit(p []byte) (uint64, error) {
	r := reader{b: p}
	n := r.u64()
	if err := r.done("CREDIT"); err != nil {
		return 0, err
	}
	if n == 0 || n > MaxCredit {
		return 0, fmt.Errorf("%w: CREDIT of %d bytes (1 to %d)", ErrProtocol, n, MaxCredit)
	}
	return n, nil
}

// Pages is a decoded PAGES payload.
type Pages struct {
	Addr uint64 // keyed (uffd.SpaceAddr)
	Data []byte
}

// Npages is the number of pages in m.
func (m *Pages) Npages() int { return len(m.Data) / PageSize }

// AppendPagesHead appends the head of a PAGES payload (pid and address)
// for keyed address key; the page data follows it.
func AppendPagesHead(b []byte, key uint64, lazy *Ranges) []byte {
	pid, addr := wireAddr(lazy.pids, key)
	b = binary.LittleEndian.AppendUint32(b, pid)
	return binary.LittleEndian.AppendUint64(b, addr)
}

// DecodePagesAddr checks the head (pid and address) of a PAGES frame whose
// payload is length bytes against the lazy runs and returns the keyed
// address and the page count: it is what the client reads before reading
// the page data straight into its destination.
func DecodePagesAddr(head []byte, length uint32, lazy *Ranges) (uint64, int, error) {
	if len(head) != pagesHead || length < pagesHead+PageSize || (length-pagesHead)%PageSize != 0 || length-pagesHead > MaxFramePages*PageSize {
		return 0, 0, fmt.Errorf("%w: PAGES payload of %d bytes is not a pid, an address and 1 to %d pages", ErrProtocol, length, MaxFramePages)
	}
	pid, addr := binary.LittleEndian.Uint32(head), binary.LittleEndian.Uint64(head[4:])
	n := int(length-pagesHead) / PageSize
	if err := checkRun(uffd.Run{Addr: addr, Npages: uint64(n)}); err != nil {
		return 0, 0, fmt.Errorf("PAGES: pid %d: %w", pid, err)
	}
	key, err := lazy.Key(pid, addr)
	if err != nil {
		return 0, 0, fmt.Errorf("PAGES: %w", err)
	}
	if err := lazy.Check(key, uint64(n)); err != nil {
		return 0, 0, fmt.Errorf("PAGES: pid %d: %w", pid, err)
	}
	return key, n, nil
}

// DecodePages decodes a whole PAGES payload (the data aliases p).
func DecodePages(p []byte, lazy *Ranges) (*Pages, error) {
	if len(p) < pagesHead || len(p) > MaxPayload {
		return nil, fmt.Errorf("%w: PAGES payload of %d bytes", ErrProtocol, len(p))
	}
	key, _, err := DecodePagesAddr(p[:pagesHead], uint32(len(p)), lazy)
	if err != nil {
		return nil, err
	}
	return &Pages{Addr: key, Data: p[pagesHead:]}, nil
}

// Zero is a decoded ZERO payload: Npages pages at keyed address Addr that
// the source read as all zero bytes.
type Zero struct {
	Addr   uint64 // keyed (uffd.SpaceAddr)
	Npages uint32
}

// Append appends the payload encoding of m to b, naming its process as
// lazy does.
func (m *Zero) Append(b []byte, lazy *Ranges) []byte {
	pid, addr := wireAddr(lazy.pids, m.Addr)
	b = binary.LittleEndian.AppendUint32(b, pid)
	b = binary.LittleEndian.AppendUint64(b, addr)
	return binary.LittleEndian.AppendUint32(b, m.Npages)
}

// DecodeZero decodes a ZERO payload: 1 to MaxFramePages pages at a
// page-aligned address inside lazy's runs for that pid.
func DecodeZero(p []byte, lazy *Ranges) (*Zero, error) {
	r := reader{b: p}
	pid, addr, n := r.u32(), r.u64(), r.u32()
	if err := r.done("ZERO"); err != nil {
		return nil, err
	}
	if n == 0 || n > MaxFramePages {
		return nil, fmt.Errorf("%w: ZERO for %d pages (1 to %d)", ErrProtocol, n, MaxFramePages)
	}
	if err := checkRun(uffd.Run{Addr: addr, Npages: uint64(n)}); err != nil {
		return nil, fmt.Errorf("ZERO: pid %d: %w", pid, err)
	}
	key, err := lazy.Key(pid, addr)
	if err != nil {
		return nil, fmt.Errorf("ZERO: %w", err)
	}
	if err := lazy.Check(key, uint64(n)); err != nil {
		return nil, fmt.Errorf("ZERO: pid %d: %w", pid, err)
	}
	return &Zero{Addr: key, Npages: n}, nil
}

// Ack lists runs installed (or dropped) by the target.
type Ack struct {
	Runs []uffd.Run // keyed (uffd.SpaceAddr)
}

// Append appends the payload encoding of m to b, naming each run's process
// as lazy does.
func (m *Ack) Append(b []byte, lazy *Ranges) []byte { return appendRuns(b, m.Runs, lazy.pids) }

// DecodeAck decodes an ACK payload; every run must lie inside lazy.
func DecodeAck(p []byte, lazy *Ranges) (*Ack, error) {
	r := reader{b: p}
	runs, err := readRuns(&r, "ACK", false, lazy.pids)
	if err != nil {
		return nil, err
	}
	if err := r.done("ACK"); err != nil {
		return nil, err
	}
	for _, run := range runs {
		if err := lazy.Check(run.Addr, run.Npages); err != nil {
			return nil, fmt.Errorf("ACK: %w", err)
		}
	}
	return &Ack{Runs: runs}, nil
}

// MaxAbsentRuns bounds the runs of one ABSENT frame (the source sends
// as many frames as it needs).
const MaxAbsentRuns = 1 << 14

// Absent lists lazy runs the source never had (see TypeAbsent).
type Absent struct {
	Runs []uffd.Run // keyed (uffd.SpaceAddr), sorted, disjoint
}

// Append appends the payload encoding of m to b, naming each run's process
// as lazy does.
func (m *Absent) Append(b []byte, lazy *Ranges) []byte { return appendRuns(b, m.Runs, lazy.pids) }

// DecodeAbsent decodes an ABSENT payload: 1 to MaxAbsentRuns sorted,
// disjoint runs, each inside lazy.
func DecodeAbsent(p []byte, lazy *Ranges) (*Absent, error) {
	r := reader{b: p}
	runs, err := readRuns(&r, "ABSENT", false, lazy.pids)
	if err != nil {
		return nil, err
	}
	if err := r.done("ABSENT"); err != nil {
		return nil, err
	}
	if len(runs) == 0 || len(runs) > MaxAbsentRuns {
		return nil, fmt.Errorf("%w: ABSENT lists %d runs (1 to %d)", ErrProtocol, len(runs), MaxAbsentRuns)
	}
	for _, run := range runs {
		if err := lazy.Check(run.Addr, run.Npages); err != nil {
			return nil, fmt.Errorf("ABSENT: %w", err)
		}
	}
	return &Absent{Runs: runs}, nil
}

// DecodeMessage decodes a FAIL or ERROR payload.
func DecodeMessage(p []byte) (*string, error) {
	if len(p) > MaxMessage {
		return nil, fmt.Errorf("%w: message of %d bytes exceeds %d", ErrProtocol, len(p), MaxMessage)
	}
	if !utf8.Valid(p) {
		return nil, fmt.Errorf("%w: message is not UTF-8", ErrProtocol)
	}
	s := string(p)
	return &s, nil
}

// message truncates s to a valid MaxMessage-byte payload.
func message(s string) []byte {
	s = strings.ToValidUTF8(s, "?")
	for len(s) > MaxMessage {
		s = strings.ToValidUTF8(s[:MaxMessage-3], "") + "..."
	}
	return []byte(s)
}

// Ranges is a sorted set of disjoint, non-adjacent page runs, keyed by
// process (uffd.SpaceAddr): the migrated lazy ranges every page address on
// the wire is checked against, and the pids that name the spaces.
type Ranges struct {
	idx  *lazypages.Index // the merged runs
	pids []uint32         // space k is process pids[k]; ascending
}

// NewRanges sorts and merges the runs of one process, named pid 0 on the
// wire; they must be page-aligned, non-empty and must not overlap.
func NewRanges(runs []uffd.Run) (*Ranges, error) { return NewTreeRanges([]uint32{0}, runs) }

// NewTreeRanges sorts and merges keyed runs (uffd.SpaceAddr) of the
// processes pids (1 to MaxProcesses, ascending; space k is pids[k]). Each
// run must lie in its space below MaxAddr, page-aligned and non-empty, and
// runs must not overlap.
func NewTreeRanges(pids []uint32, runs []uffd.Run) (*Ranges, error) {
	if len(pids) == 0 || len(pids) > MaxProcesses {
		return nil, fmt.Errorf("%w: %d processes (1 to %d)", ErrProtocol, len(pids), MaxProcesses)
	}
	for i := 1; i < len(pids); i++ {
		if pids[i] <= pids[i-1] {
			return nil, fmt.Errorf("%w: pid %d is not above the previous %d", ErrProtocol, pids[i], pids[i-1])
		}
	}
	rs := slices.Clone(runs)
	slices.SortFunc(rs, func(a, b uffd.Run) int { return cmp.Compare(a.Addr, b.Addr) })
	merged := make([]uffd.Run, 0, len(rs))
	for _, r := range rs {
		sp, addr := uffd.SplitSpace(r.Addr)
		if sp >= len(pids) {
			return nil, fmt.Errorf("%w: lazy run at %#x is in space %d of %d processes", ErrProtocol, r.Addr, sp, len(pids))
		}
		if err := checkRun(uffd.Run{Addr: addr, Npages: r.Npages}); err != nil {
			return nil, fmt.Errorf("pid %d: %w", pids[sp], err)
		}
		if n := len(merged); n > 0 {
			last := &merged[n-1]
			if r.Addr < last.End() {
				return nil, fmt.Errorf("%w: lazy run at %#x overlaps the one ending %#x", ErrProtocol, r.Addr, last.End())
			}
			if r.Addr == last.End() {
				last.Npages += r.Npages
				continue
			}
		}
		merged = append(merged, r)
	}
	idx, err := lazypages.NewIndex(merged)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return &Ranges{idx: idx, pids: slices.Clone(pids)}, nil
}

// Pids returns the processes, space k being Pids()[k] (callers must not
// modify them).
func (s *Ranges) Pids() []uint32 { return s.pids }

// Key keys address addr of process pid, with an error wrapping
// ErrOutOfRange if the session does not serve pid.
func (s *Ranges) Key(pid uint32, addr uint64) (uint64, error) {
	if s != nil {
		if key, ok := keyOf(s.pids, pid, addr); ok {
			return key, nil
		}
	}
	return 0, fmt.Errorf("%w: pid %d is not served in this session", ErrOutOfRange, pid)
}

// Runs returns the merged runs (callers must not modify them).
func (s *Ranges) Runs() []uffd.Run { return s.idx.Runs() }

// Pages is the number of pages in s.
func (s *Ranges) Pages() uint64 { return s.idx.Pages() }

// Check reports whether [addr, addr+npages pages) lies inside s, with an
// error wrapping ErrOutOfRange naming the range.
func (s *Ranges) Check(addr, npages uint64) error {
	if s != nil && npages > 0 && addr%PageSize == 0 {
		if g, ok := s.idx.Lookup(addr); ok && npages <= s.idx.RunEnd(g)-g {
			return nil
		}
	}
	sp, a := uffd.SplitSpace(addr)
	return fmt.Errorf("%w: space %d %#x-%#x (%d pages)", ErrOutOfRange, sp, a, a+npages*PageSize, npages)
}

// wire is one framed connection: buffered reads, serialized writes.
type wire struct {
	conn net.Conn
	br   *bufio.Reader
	hdr  [HeaderSize]byte

	wmu sync.Mutex // serializes writes
}

func newWire(c net.Conn) *wire {
	return &wire{conn: c, br: bufio.NewReaderSize(c, 4<<10)}
}

// readHeader reads and checks the next frame header.
func (w *wire) readHeader() (*Header, error) {
	if _, err := io.ReadFull(w.br, w.hdr[:]); err != nil {
		return nil, err
	}
	return DecodeHeader(w.hdr[:])
}

// readPayload reads a payload of h.Length bytes into a new slice.
func (w *wire) readPayload(h *Header) ([]byte, error) {
	p := make([]byte, h.Length)
	if _, err := io.ReadFull(w.br, p); err != nil {
		return nil, unexpectedEOF(err)
	}
	return p, nil
}

// readFrame reads a whole frame.
func (w *wire) readFrame() (*Header, []byte, error) {
	h, err := w.readHeader()
	if err != nil {
		return nil, nil, err
	}
	p, err := w.readPayload(h)
	if err != nil {
		return nil, nil, err
	}
	return h, p, nil
}

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeFrame writes one frame: header and payload parts in one writev-like
// call (net.Buffers).
func (w *wire) writeFrame(t Type, id uint64, parts ...[]byte) error {
	var n int
	for _, p := range parts {
		n += len(p)
	}
	var hb [HeaderSize]byte
	h := Header{Type: t, Length: uint32(n), ID: id}.Append(hb[:0])
	bufs := make(net.Buffers, 0, 1+len(parts))
	bufs = append(bufs, h)
	for _, p := range parts {
		if len(p) > 0 {
			bufs = append(bufs, p)
		}
	}
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := bufs.WriteTo(w.conn)
	return err
}

// writeBuffers writes pre-encoded frames in one writev-like call.
func (w *wire) writeBuffers(bufs net.Buffers) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := bufs.WriteTo(w.conn)
	return err
}

// writeRaw writes pre-encoded frames.
func (w *wire) writeRaw(b []byte) error {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	_, err := w.conn.Write(b)
	return err
}

// appendFrame appends a whole small frame to b.
func appendFrame(b []byte, t Type, id uint64, payload []byte) []byte {
	b = Header{Type: t, Length: uint32(len(payload)), ID: id}.Append(b)
	return append(b, payload...)
}
