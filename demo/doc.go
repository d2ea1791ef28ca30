// Package demo runs the scenario lazycr exists for and tells its story: a
// UDP ping-pong client migrates post-copy from host B to host C while it
// talks to a server on host A, and the server simply keeps answering.
package demo
