// Package netlock holds the packets of TCP connections while they migrate:
// it installs nftables rules that drop (never reject, so the peer sees no
// RST) every packet of the listed connections, in both directions, in one
// network namespace, and removes them again.
//
// A lock is one table of its own in the inet family (IPv4 and IPv6), named
// after the lazycr process that owns it:
//
//	table inet lazycr_<pid>_<starttime>_<seq> {        # flags owner
//		set conns4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; elements = { local . lport . remote . rport, … } }
//		set conns6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; … }
//		chain in  { type filter hook input  priority raw; meta mark != 0x6c7a6372 ip daddr . tcp dport . ip saddr . tcp sport @conns4 counter drop; (ip6 alike) }
//		chain out { type filter hook output priority raw; meta mark != 0x6c7a6372 ip saddr . tcp sport . ip daddr . tcp dport @conns4 counter drop; (ip6 alike) }
//		# listening sockets (Options.Listeners, HoldWith): new connections' SYNs only
//		set listen4 { type ipv4_addr . inet_service; … }   set lports4 { type inet_service; … }   (listen6, lports6 alike)
//		chain in  { … tcp flags & (syn|ack) == syn ip daddr . tcp dport @listen4 counter drop; … tcp dport @lports4 counter drop }
//		# UDP ports (Options.UDPPorts): the ICMP port unreachable errors that quote a datagram to them
//		set udp4 { type ipv4_addr . inet_service; … }   set udpports4 { type inet_service; … }   (udp6, udpports6 alike)
//		chain out { … icmp type 3 code 3, quoting UDP: <quoted daddr> . <quoted dport> @udp4 counter drop; … <quoted dport> @udpports4 counter drop }
//	}
//
// <pid> and <starttime> (field 22 of /proc/PID/stat) identify the owning
// process even after its pid is reused; <seq> tells apart the locks of one
// process. A set keyed by the 4-tuple keeps per-packet cost constant however
// many connections are locked. A set or rule of a family with no connection
// is left out. Packets marked [InjectMark] pass: they are lazycr's own,
// written into a locked connection while it is re-created. The whole table is created in one nftables transaction (one
// netlink batch, applied whole or not at all, see nfnetlink_rcv_batch in
// net/netfilter/nfnetlink.c), so a lock is either complete or absent.
//
// Dropped, not rejected: a dropped segment is never seen by the TCP stack, so
// nothing answers it; the sender retransmits with backoff and its connection
// stays established (tcp(7), tcp_retries2). Locally generated segments
// dropped at the output hook are treated by TCP as a local congestion loss
// and retransmitted later, also without an error to the application. A lock
// matches by 4-tuple, not by socket, so it can be taken before the socket
// exists (on the restore side): a segment arriving before the restored
// socket is live is dropped, not answered with a reset for want of a socket.
//
// # A lock never outlives lazycr
//
// The table carries NFT_TABLE_F_OWNER (Linux ≥ 5.12, commit 6001a930ce03
// "netfilter: nftables: introduce table ownership"): the kernel records the
// netlink port id of the socket that created the table, refuses changes from
// any other socket (EPERM), and when that socket is released — by close(2) or
// by the death of the process, SIGKILL included — its NETLINK_URELEASE
// notifier (nft_rcv_nl_event in net/netfilter/nf_tables_api.c) destroys every
// table the socket owns. A [Lock] therefore keeps its netlink socket
// (O_CLOEXEC, so no exec'd child inherits it) open for its whole life, and
// everything it does to its table goes through that socket. NFT_TABLE_F_PERSIST
// (6.9+) is never set.
//
// github.com/google/nftables (v0.3.0 and its master) always writes
// NFTA_TABLE_FLAGS as 0, so this package encodes the NEWTABLE message itself
// and lets the library encode the sets, chains and rules (recorded through
// its test dialer, never sent by it); the batch goes out on the lock's own
// socket.
//
// On a kernel without owner tables (before 5.12, NEWTABLE with the flag
// fails EINVAL) the table is created without the flag and [Lock.Owned] reports false; such a
// table outlives a killed lazycr, and [Sweep] removes the tables of lazycr
// processes that are gone. Sweep must run in the PID namespace of the
// lazycr processes whose tables it judges.
//
// # Held locks: the one lock that outlives lazycr
//
// A plain `dump -D` kills the process while its connections must stay
// silent until some later `restore -D` re-creates them: that lock cannot
// belong to the dump's socket. The dump takes an owned lock first (so a
// dump killed half-way leaves nothing), and only once the image is written,
// right before killing the process, adds a held lock ([Hold]): an unowned
// table named lazycr_hold_<pid>_<starttime> after the dumped process and
// recorded in its image. Then the dump's own lock goes and the dump exits.
// The restore removes the held lock ([RemoveHeld]) once the re-created
// sockets are live, and also when it fails (the connections are lost then:
// their peers get a reset at their next segment). Sweep never judges held
// locks; `lazycr unlock` lists and removes those of images that will not be
// restored, and every restore with TCP connections sweeps dead lazycrs'
// tables on the way.
//
// # Namespaces
//
// Every netlink socket is created on a goroutine locked to an OS thread that
// setns(2)-ed into the target network namespace and that is then thrown away
// (the goroutine exits locked, so the runtime ends the thread); the socket
// stays bound to that namespace from any thread. No other thread ever
// changes namespace.
package netlock
