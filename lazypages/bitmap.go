package lazypages

import "math/bits"

// A Bitmap is a set of page indexes below the n it was made for. Indexes
// at or above n are a caller's bug (they panic or touch the padding bits of
// the last word).
type Bitmap []uint64

// NewBitmap returns an empty set for indexes [0, n).
func NewBitmap(n uint64) Bitmap { return make(Bitmap, (n+63)/64) }

// Get reports whether i is in the set.
func (b Bitmap) Get(i uint64) bool { return b[i/64]&(1<<(i%64)) != 0 }

// Set adds i.
func (b Bitmap) Set(i uint64) { b[i/64] |= 1 << (i % 64) }

// Clear removes i.
func (b Bitmap) Clear(i uint64) { b[i/64] &^= 1 << (i % 64) }

// mask returns the bits [i%64, i%64+n) of i's word, n clamped to the word,
// and how many indexes it covers.
func mask(i, n uint64) (uint64, uint64) {
	lo := i % 64
	k := min(n, 64-lo)
	if k == 64 {
		return ^uint64(0), 64
	}
	return (uint64(1)<<k - 1) << lo, k
}

// SetRange adds [i, i+n), whole words at a time, and returns how many of
// them were not in the set before.
func (b Bitmap) SetRange(i, n uint64) uint64 {
	var fresh uint64
	for n > 0 {
		m, k := mask(i, n)
		w := &b[i/64]
		fresh += uint64(bits.OnesCount64(m &^ *w))
		*w |= m
		i, n = i+k, n-k
	}
	return fresh
}

// ClearRange removes [i, i+n), whole words at a time.
func (b Bitmap) ClearRange(i, n uint64) {
	for n > 0 {
		m, k := mask(i, n)
		b[i/64] &^= m
		i, n = i+k, n-k
	}
}

// NextClear returns the first index in [from, to) not in the set.
func (b Bitmap) NextClear(from, to uint64) (uint64, bool) {
	for i := from; i < to; {
		w := b[i/64] | (1<<(i%64) - 1) // ignore the bits below i
		if w == ^uint64(0) {
			i = (i/64 + 1) * 64
			continue
		}
		j := i/64*64 + uint64(bits.TrailingZeros64(^w))
		if j < to {
			return j, true
		}
		return 0, false
	}
	return 0, false
}

// ClearRun returns how many consecutive indexes from i on are not in the
// set, up to limit.
func (b Bitmap) ClearRun(i, limit uint64) uint64 {
	var n uint64
	for n < limit {
		p := i + n
		room := 64 - p%64
		free := uint64(bits.TrailingZeros64(b[p/64] >> (p % 64))) // 64 if no bit is set
		if free < room {
			n += free // stopped by a set bit
			break
		}
		n += room
	}
	return min(n, limit)
}

// Or adds every index of o (made for the same n) to b.
func (b Bitmap) Or(o Bitmap) {
	for i, w := range o[:min(len(o), len(b))] {
		b[i] |= w
	}
}

// Count returns how many indexes are in the set.
func (b Bitmap) Count() uint64 {
	var n uint64
	for _, w := range b {
		n += uint64(bits.OnesCount64(w))
	}
	return n
}
