# qa_state.pl: a Perl workload: a 100k-entry hash and a 2 MB string with
# its MD5, checked every 50 ms.
# Report: {"pid":N}   Ticks: "tick ok N" after each passing check; a failed
# check goes to stderr and the program exits 1.
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use POSIX ();
use Time::HiRes qw(sleep);

my %h = map { $_ => "v$_" x 5 } 1 .. 100000;
my $blob = join("", map { chr($_ % 251) } 1 .. 2000000);
my $d0 = md5_hex($blob);
sub emit { my $s = shift; POSIX::write(1, $s, length $s) == length $s or die "write: $!"; }
emit("{\"pid\":$$}\n");
for (my $n = 1; ; $n++) {
	if (md5_hex($blob) ne $d0 || $h{99999} ne "v99999" x 5 || scalar(keys %h) != 100000) {
		print STDERR "qa_state.pl: state changed\n";
		exit 1;
	}
	emit("tick ok $n\n");
	sleep(0.05);
}
