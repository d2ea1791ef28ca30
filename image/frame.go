package image

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/lazycr/lazycr/image/pb"
	"google.golang.org/protobuf/proto"
)

// FormatVersion is the image format version this lazycr writes and the
// newest it reads.
const FormatVersion = 1

// HeaderSize is the size of the frame header that starts every image file.
const HeaderSize = 32

// Size limits: readers refuse anything larger.
const (
	MaxMessageSize = 256 << 20 // one protobuf message
	MaxPagesSize   = 1 << 40   // one pages file's data
)

var magic = [8]byte{'L', 'A', 'Z', 'Y', 'C', 'R', 0, 0x1a}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Kind names what a file holds.
type Kind [4]byte

// The kinds of image files.
var (
	KindInventory = Kind{'I', 'N', 'V', 'T'}
	KindTree      = Kind{'T', 'R', 'E', 'E'}
	KindMemory    = Kind{'M', 'M', 'A', 'P'}
	KindFds       = Kind{'F', 'D', 'T', 'B'}
	KindPages     = Kind{'P', 'A', 'G', 'E'}
)

func (k Kind) String() string { return string(k[:]) }

// Errors returned by readers; they are wrapped with the file's name.
var (
	// ErrBadMagic: the file is not a lazycr image file.
	ErrBadMagic = errors.New("not a lazycr image file (bad magic)")
	// ErrNewerVersion: the file was written by a newer lazycr.
	ErrNewerVersion = errors.New("image format version is newer than this lazycr reads")
	// ErrTruncated: the file ends before its header says it does.
	ErrTruncated = errors.New("image file is truncated")
	// ErrCorrupt: checksum mismatch, trailing bytes, a wrong kind or undecodable contents.
	ErrCorrupt = errors.New("image file is corrupt")
	// ErrInvalid: the contents decode but contradict each other.
	ErrInvalid = errors.New("image set is inconsistent")
)

// Header is the decoded frame header.
type Header struct {
	Kind    Kind
	Version uint32
	Length  uint64
	CRC     uint32
}

// MarshalBinary encodes the header into its 32-byte form.
func (h Header) MarshalBinary() []byte {
	b := make([]byte, HeaderSize)
	copy(b[0:8], magic[:])
	copy(b[8:12], h.Kind[:])
	binary.LittleEndian.PutUint32(b[12:16], h.Version)
	binary.LittleEndian.PutUint64(b[16:24], h.Length)
	binary.LittleEndian.PutUint32(b[24:28], h.CRC)
	return b
}

// ParseHeader decodes and checks a frame header of the wanted kind. max is
// the largest payload length accepted.
func ParseHeader(b []byte, want Kind, max uint64) (Header, error) {
	if len(b) < HeaderSize {
		if n := min(len(b), len(magic)); !bytes.Equal(b[:n], magic[:n]) {
			return Header{}, ErrBadMagic
		}
		return Header{}, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(b), HeaderSize)
	}
	if !bytes.Equal(b[:8], magic[:]) {
		return Header{}, ErrBadMagic
	}
	var h Header
	copy(h.Kind[:], b[8:12])
	h.Version = binary.LittleEndian.Uint32(b[12:16])
	h.Length = binary.LittleEndian.Uint64(b[16:24])
	h.CRC = binary.LittleEndian.Uint32(b[24:28])
	if h.Version > FormatVersion {
		return Header{}, fmt.Errorf("%w: file has version %d, this lazycr reads up to %d", ErrNewerVersion, h.Version, FormatVersion)
	}
	if h.Version == 0 {
		return Header{}, fmt.Errorf("%w: version 0", ErrCorrupt)
	}
	if h.Kind != want {
		return Header{}, fmt.Errorf("%w: holds %q, expected %q", ErrCorrupt, h.Kind.String(), want.String())
	}
	if binary.LittleEndian.Uint32(b[28:32]) != 0 {
		return Header{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrCorrupt)
	}
	if h.Length > max {
		return Header{}, fmt.Errorf("%w: payload of %d bytes exceeds the limit of %d", ErrCorrupt, h.Length, max)
	}
	return h, nil
}

// Encode frames a protobuf message as an image file of the given kind.
func Encode(kind Kind, m proto.Message) ([]byte, error) {
	payload, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s: %w", kind, err)
	}
	if len(payload) > MaxMessageSize {
		return nil, fmt.Errorf("marshal %s: %d bytes exceeds the limit of %d", kind, len(payload), MaxMessageSize)
	}
	h := Header{Kind: kind, Version: FormatVersion, Length: uint64(len(payload)), CRC: crc32.Checksum(payload, castagnoli)}
	return append(h.MarshalBinary(), payload...), nil
}

// Decode checks the frame of data and unmarshals its payload into m. name is
// used in errors only. Unknown fields are an error only when the version is
// newer, which ParseHeader already refuses; fields added within a version are
// kept as unknown fields.
func Decode(name string, data []byte, kind Kind, m proto.Message) error {
	h, err := ParseHeader(data, kind, MaxMessageSize)
	if err != nil {
		return fmt.Errorf("read %s: %w", name, err)
	}
	payload := data[HeaderSize:]
	if uint64(len(payload)) < h.Length {
		return fmt.Errorf("read %s: %w: payload has %d of %d bytes", name, ErrTruncated, len(payload), h.Length)
	}
	if uint64(len(payload)) > h.Length {
		return fmt.Errorf("read %s: %w: %d bytes after the payload", name, ErrCorrupt, uint64(len(payload))-h.Length)
	}
	if got := crc32.Checksum(payload, castagnoli); got != h.CRC {
		return fmt.Errorf("read %s: %w: checksum %08x, header says %08x", name, ErrCorrupt, got, h.CRC)
	}
	if err := proto.Unmarshal(payload, m); err != nil {
		return fmt.Errorf("read %s: %w: %v", name, ErrCorrupt, err)
	}
	return nil
}

// readAllLimited reads r up to limit bytes; more is an error.
func readAllLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrCorrupt, limit)
	}
	return b, nil
}

// Warm initializes the protobuf machinery of every image message (the
// first marshal or unmarshal of a message type builds its reflection
// tables, a few milliseconds). Call it early, off the critical path, so the
// first image decoded during a migration's downtime does not pay for it.
func Warm() {
	for _, m := range []proto.Message{&pb.Inventory{}, &pb.ProcessTree{Processes: []*pb.Process{{Threads: []*pb.Thread{{Regs: &pb.Registers{}}}}}},
		&pb.MemoryMap{Vmas: []*pb.Vma{{Pages: []*pb.PageRun{{}}, File: &pb.FileID{}}}, Mm: &pb.MmFields{}},
		&pb.FdTable{Fds: []*pb.Fd{{Kind: &pb.Fd_InetSocket{InetSocket: &pb.InetSocket{Options: &pb.SocketOptions{}}}}}}} {
		b, err := proto.Marshal(m)
		if err == nil {
			_ = proto.Unmarshal(b, m)
		}
	}
}
