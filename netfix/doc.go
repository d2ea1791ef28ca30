// Package netfix gives migrated sockets a local address that works on the
// restore host: it rebinds them or takes their address over, via netlink.
//
// lazycr recreates an inet socket with the local address and port it had on
// the source host. When that address does not exist on the target, bind(2)
// fails with EADDRNOTAVAIL. Before the restored process resumes, [Fix]
// decides per socket, by [Policy]:
//
//   - [Rebind] keeps the port and binds the address the kernel would pick as
//     source toward the peer (`ip route get $peer` → src), or toward the
//     default route for a socket that is bound but not connected.
//   - [Takeover] puts the old address on the interface facing the peer,
//     makes sure the peer is routed through it, and announces the move with a
//     gratuitous ARP (RFC 5227 section 2.3). The socket keeps its address.
//   - [Fail] refuses, naming the fd and the address.
//
// Every change to the host is made idempotently (replace, never add; a delete
// of what is already gone succeeds), logged at info level with its iproute2
// equivalent, and returned as a [Change] so the CLI can print it and [Undo]
// can reverse it. [Release] removes taken-over addresses from the source host
// once the migration is done.
//
// All host access goes through the [Netlink] interface; [NewNetlink] wraps a
// [netlink.Handle] bound to one network namespace.
package netfix
