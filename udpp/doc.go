// Package udpp is the UDP ping-pong program of the migration demo: a server
// that answers each "ping N" with "pong N", and a client that pings at a fixed
// interval and counts what comes back.
//
// Wire format: one datagram per message, ASCII, no terminator:
//
//	client → server   "This is ping packet N"   N = 1, 2, 3, … (decimal)
//	server → client   "This is pong packet N"   same N
//
// Server output, three lines per ping datagram (IP:PORT is the sender):
//
//	Received ping packet from IP:PORT
//	Data: This is ping packet N
//	Sending pong packet N
//
// A datagram that is not a ping gets "Received…", "Data: <payload>" and
// "Ignoring malformed packet", and no reply.
//
// Client output: one line per pong, "pong N from IP:PORT", and a stats line
// every second, on request (SIGUSR1 in the command) and on exit:
//
//	stats sent=S received=R lost=L duplicated=D reordered=O
//
// Counters (N ranges over the pings sent; pongs for other numbers and
// malformed datagrams are printed if parseable but not counted):
//
//   - sent: pings sent.
//   - received: distinct N whose pong arrived.
//   - duplicated: pongs for an N whose pong had already arrived.
//   - lost: N whose pong has not arrived although a pong for a later M > N
//     has; on exit every N not received counts. A late pong moves its N from
//     lost to reordered, so at exit sent = received + lost.
//   - reordered: pongs that arrived (first time) after a pong for a later N.
//
// Every line is written with one Write call (and flushed if the writer has a
// Flush method), so a reader of an output file sees whole lines.
//
// The C program udpp/udpp.c implements the same CLI and output.
package udpp
