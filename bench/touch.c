/*
 * ch-bench-touch FILE: what /bin/true does, plus one O_APPEND write of one byte to FILE. The
 * command section 8 of bench/run gives both `callhook receive --exec` and adnanh/webhook, so
 * the two run the same command and the file's size counts the commands that ran.
 */
#include <fcntl.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 2;
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return 1;
    int ok = write(fd, "x", 1) == 1;
    return (close(fd) == 0 && ok) ? 0 : 1;
}
