// Package image reads and writes lazycr image sets: the protobuf messages of
// package pb, each in a checked frame, plus raw page files.
//
// # Files
//
//	inventory.img     Inventory    format version and origin, read first
//	tree.img          ProcessTree  processes, threads, signals, credentials
//	mm-<pid>.img      MemoryMap    VMAs, mm fields, auxv, page runs
//	fds-<pid>.img     FdTable      file descriptors
//	pages-<pid>.img   page data    eager pages, addressed by PageRun.offset
//
// # Frame
//
// Every file starts with a 32-byte header, all integers little-endian:
//
//	0        8       12        16            24       28        32
//	+--------+-------+---------+-------------+--------+---------+
//	| magic  | kind  | version | payload len | crc32c | zero    |  payload ...
//	+--------+-------+---------+-------------+--------+---------+
//
// magic is "LAZYCR\x00\x1a"; kind is four ASCII bytes ("INVT", "TREE",
// "MMAP", "FDTB", "PAGE"); version is the format version the writer used
// (readers refuse a newer one with [ErrNewerVersion]); crc32c (Castagnoli)
// covers the payload. A protobuf payload is at most [MaxMessageSize]; a page
// payload at most [MaxPagesSize]. A file shorter than its header says is
// [ErrTruncated]; a checksum mismatch or trailing bytes is [ErrCorrupt].
// Every error names the file.
package image
