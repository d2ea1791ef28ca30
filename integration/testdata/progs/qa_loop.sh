# qa_loop.sh: a bash loop that runs builtins only (no child process ever):
# an associative array and an indexed array checked every round, paced by
# read -t on a FIFO opened read-write (nobody ever writes to it).
# Usage: bash qa_loop.sh FIFO
# Report: {"pid":N}   Ticks: "tick ok N"; a failed check exits 1.
exec 3<>"$1"
declare -A m
a=()
for ((k = 1; k <= 2000; k++)); do m[k$k]=$k; a+=("$k"); done
echo "{\"pid\":$$}"
i=0
while :; do
	if [[ ${m[k1999]} != 1999 || ${#a[@]} != 2000 || ${a[1234]} != 1235 ]]; then
		echo "qa_loop.sh: state changed" >&2
		exit 1
	fi
	i=$((i + 1))
	echo "tick ok $i"
	read -t 0.05 -u 3 && { echo "qa_loop.sh: read something from the FIFO" >&2; exit 1; }
done
