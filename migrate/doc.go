// Package migrate wires dump, the page server, restore and the lazy-pages
// handler into the two halves of a post-copy migration: Source (freeze and
// serve) and Target (fetch, rebuild, resume, fill on fault).
package migrate
