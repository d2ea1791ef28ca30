package netlock

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nftaTableOwner is NFTA_TABLE_OWNER from <linux/netfilter/nf_tables.h>
// (enum nft_table_attributes, Linux ≥ 5.12): the netlink port id of the
// socket that owns the table.
const nftaTableOwner = 7

// ErrBadTableMsg reports a table message from the kernel that this package
// cannot decode.
var ErrBadTableMsg = errors.New("bad nftables table message")

// tableInfo is what the kernel reports about one table.
type tableInfo struct {
	name  string
	flags uint32 // NFTA_TABLE_FLAGS
	owner uint32 // NFTA_TABLE_OWNER, 0 without an owner
}

// listTables lists the inet tables of the network namespace of sock.
// It decodes the dump itself: google/nftables v0.3.0 reads NFTA_TABLE_FLAGS
// in host byte order, and the flags decide what Sweep may delete.
//
// Equivalent to: nft list tables inet
func listTables(sock *netlink.Conn) ([]tableInfo, error) {
	msgs, err := sock.Execute(netlink.Message{
		Header: netlink.Header{Type: nftMsg(unix.NFT_MSG_GETTABLE), Flags: netlink.Request | netlink.Dump},
		Data:   nfgenmsg(byte(tableFamily), 0),
	})
	if err != nil {
		return nil, fmt.Errorf("dump inet tables: %w", err)
	}
	var ts []tableInfo
	for _, m := range msgs {
		if m.Header.Type != nftMsg(unix.NFT_MSG_NEWTABLE) {
			continue
		}
		t, err := parseTableMsg(m.Data)
		if err != nil {
			return nil, fmt.Errorf("dump inet tables: %w", err)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

// parseTableMsg decodes the payload of an NFT_MSG_NEWTABLE message: struct
// nfgenmsg, then attributes in network byte order. A table without a name
// is an error.
func parseTableMsg(b []byte) (tableInfo, error) {
	if len(b) < 4 {
		return tableInfo{}, fmt.Errorf("table message of %d bytes: %w", len(b), ErrBadTableMsg)
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return tableInfo{}, fmt.Errorf("table message: %w: %w", ErrBadTableMsg, err)
	}
	ad.ByteOrder = binary.BigEndian
	var t tableInfo
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_NAME:
			t.name = ad.String()
		case unix.NFTA_TABLE_FLAGS:
			t.flags = ad.Uint32()
		case nftaTableOwner:
			t.owner = ad.Uint32()
		}
	}
	if err := ad.Err(); err != nil {
		return tableInfo{}, fmt.Errorf("table message: %w: %w", ErrBadTableMsg, err)
	}
	if t.name == "" {
		return tableInfo{}, fmt.Errorf("table message without a name: %w", ErrBadTableMsg)
	}
	return t, nil
}
