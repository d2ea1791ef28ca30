package netfix

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
)

// ARP packet layout for Ethernet and IPv4 (RFC 826), as sent on an
// AF_PACKET SOCK_DGRAM socket (the kernel adds the Ethernet header):
//
//	 0  hardware type  (2)  1 = Ethernet
//	 2  protocol type  (2)  0x0800 = IPv4
//	 4  hw addr len    (1)  6
//	 5  proto addr len (1)  4
//	 6  operation      (2)  1 = request, 2 = reply
//	 8  sender hw addr (6)
//	14  sender IP      (4)
//	18  target hw addr (6)
//	24  target IP      (4)
//	28
const (
	arpLen       = 28
	arpHwEther   = 1
	arpOpRequest = 1
	arpOpReply   = 2
	ethPIPv4     = 0x0800
)

// arpAnnouncement builds an ARP Announcement (RFC 5227 section 2.3): a
// request whose sender and target IP are both ip, sender hardware address
// mac and target hardware address zero. Sent to the broadcast address, it
// makes neighbours that have ip in their cache point it at mac.
func arpAnnouncement(mac net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	if len(mac) != 6 {
		return nil, fmt.Errorf("build ARP announcement for %s: hardware address %v is not Ethernet", ip, mac)
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return nil, fmt.Errorf("build ARP announcement: %s is not IPv4", ip)
	}
	b := make([]byte, arpLen)
	binary.BigEndian.PutUint16(b[0:], arpHwEther)
	binary.BigEndian.PutUint16(b[2:], ethPIPv4)
	b[4], b[5] = 6, 4
	binary.BigEndian.PutUint16(b[6:], arpOpRequest)
	copy(b[8:14], mac)
	a := ip.As4()
	copy(b[14:18], a[:])
	copy(b[24:28], a[:])
	return b, nil
}
