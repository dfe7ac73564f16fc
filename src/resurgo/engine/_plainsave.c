/* The save's hot path: reading the plain files of a directory (regular files of up to
 * 1 MiB, one link, no extended attributes, no holes: most files of a system) and making
 * their archive records and manifest lines, with the system calls tar makes for them
 * (fstatat, openat, a read, fstat, close, and flistxattr) and no Python objects per file
 * but the digest; the opens and reads of a long run on two cores (read_run).
 *
 * It only takes the path everything agrees on: a name that is not such a file, a path the
 * manifest would escape, a file that changed while it was read, any failing system call:
 * it stops there, before the entry counts as saved, and says where it stopped. save._Saver
 * then takes that entry through its general path, which reads it again (twice if it moves
 * again), says what is wrong or saves it. So every message, every note and every file
 * listed as changed comes from the Python code; this file can only make saves faster.
 *
 * What it makes is byte for byte what the general path makes of the same file:
 * records.whole_file_record, the data, its digest; manifest.encode_entry's line.
 */

#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#define FRAME_SIZE 13
#define FIXED_SIZE 59
#define START_SIZE (FRAME_SIZE + FIXED_SIZE)
#define EXTENT_SIZE 16
#define CRC_SIZE 4
#define DIGEST_SIZE 32
/* save.SMALL: larger files stream through the general path */
#define SMALL_MAX (1u << 20)
/* A path longer than this is left to the general path (which notes those over MAX_PATH). */
#define PATH_LIMIT 4096
/* A manifest line of a plain file beside its path: the kind, 9 numbers of at most 20
 * digits (a sign with them), the digest, 14 tabs and separators. */
#define LINE_BEYOND_PATH (2 + 9 * 21 + 2 * DIGEST_SIZE + 16)

#define READ_FLAGS (O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOATIME)

enum { DONE = 0, FULL = 1, GENERAL = 2 };

/* zlib.crc32, sliced by eight: a record's header is about a hundred bytes. */
static uint32_t crc_table[8][256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xFF];
}

static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    while (n >= 8) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + 4, 4);
        a ^= c;
        c = crc_table[7][a & 0xFF] ^ crc_table[6][(a >> 8) & 0xFF]
            ^ crc_table[5][(a >> 16) & 0xFF] ^ crc_table[4][a >> 24]
            ^ crc_table[3][b & 0xFF] ^ crc_table[2][(b >> 8) & 0xFF]
            ^ crc_table[1][(b >> 16) & 0xFF] ^ crc_table[0][b >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static unsigned char *put16(unsigned char *p, uint16_t v) { memcpy(p, &v, 2); return p + 2; }
static unsigned char *put32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); return p + 4; }
static unsigned char *put64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); return p + 8; }

static char *put_unsigned(char *p, unsigned long long v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_signed(char *p, long long v)
{
    if (v < 0) {
        *p++ = '-';
        return put_unsigned(p, 0ULL - (unsigned long long)v);
    }
    return put_unsigned(p, (unsigned long long)v);
}

static char *put_octal(char *p, unsigned int v)
{
    char tmp[12];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (v & 7));
        v >>= 3;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Python's st_*_ns: seconds * 10**9 + nanoseconds; 0 when it does not fit an i64 (the
 * record's field), and the general path then says what it says of such a time. */
static int time_ns(const struct timespec *t, int64_t *out)
{
    int64_t s;
    if (__builtin_mul_overflow((int64_t)t->tv_sec, (int64_t)1000000000, &s)
            || __builtin_add_overflow(s, (int64_t)t->tv_nsec, out))
        return 0;
    return 1;
}

/* A name whose path the manifest writes as it is (names.escape leaves printable ASCII
 * but the backslash alone; other bytes are left to the general path). */
static int plain_text(const unsigned char *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < 0x20 || p[i] >= 0x7f || p[i] == '\\')
            return 0;
    return 1;
}

/* Whether an open file's data is one extent from 0 to size (data_extents' answer for
 * the general path's small files); st_blocks says so for most without a system call. */
static int whole(int fd, const struct stat *st)
{
    if (st->st_size == 0 || (uint64_t)st->st_blocks * 512 >= (uint64_t)st->st_size)
        return 1;
    off_t data = lseek(fd, 0, SEEK_DATA);
    if (data < 0)
        return errno == EINVAL || errno == ENOTSUP || errno == EOPNOTSUPP;
    return data == 0 && lseek(fd, 0, SEEK_HOLE) >= st->st_size;
}

/* A file of the run: its name, its stat before the read (by name, fstatat), and where
 * its entry goes in the records: the record (``head`` bytes), the data, the digest. */
typedef struct {
    const char *name;
    Py_ssize_t len;
    struct stat st;
    size_t at, head;
} Plain;

/* The stat of a plain file: a regular file of the tree's device, with one link, of at
 * most SMALL_MAX bytes. */
static int plain_stat(const struct stat *st, dev_t device)
{
    return S_ISREG(st->st_mode) && st->st_dev == device && st->st_nlink == 1
           && st->st_size >= 0 && (uint64_t)st->st_size <= SMALL_MAX;
}

/* Read one file of the run into ``at``, and prove that it was steady: the file opened is
 * the inode stat'ed, without extended attributes or holes, and its size, mtime and ctime
 * did not move by the end of the read (every write moves ctime). 0 when so. */
static int read_plain(int dir_fd, const Plain *f, unsigned char *at)
{
    int fd = openat(dir_fd, f->name, READ_FLAGS);
    if (fd < 0)
        return -1;
    int ok = 0;
    const struct stat *st = &f->st;
    ssize_t listed = flistxattr(fd, NULL, 0);
    if (listed != 0 && !(listed < 0 && (errno == ENOTSUP || errno == EOPNOTSUPP)))
        goto out;
    if (!whole(fd, st))
        goto out;
    size_t size = (size_t)st->st_size, got = 0;
    while (got < size) {
        ssize_t n = pread(fd, at + got, size - got, (off_t)got);
        if (n <= 0)
            goto out;
        got += (size_t)n;
    }
    struct stat after;
    if (fstat(fd, &after) != 0)
        goto out;
    ok = after.st_ino == st->st_ino && after.st_dev == st->st_dev
         && after.st_size == st->st_size
         && after.st_mtim.tv_sec == st->st_mtim.tv_sec
         && after.st_mtim.tv_nsec == st->st_mtim.tv_nsec
         && after.st_ctim.tv_sec == st->st_ctim.tv_sec
         && after.st_ctim.tv_nsec == st->st_ctim.tv_nsec;
out:
    if (close(fd) != 0)
        ok = 0;
    return ok ? 0 : -1;
}

/* The reads of a run on two cores: a helper thread, one a process, started when first
 * needed, takes files of the run from a shared counter while the calling thread does
 * the same; each file's data goes to its own place. Whoever fails at a file lowers
 * ``stop`` to it, and no one starts a file past ``stop``: every file before the final
 * ``stop`` was read, whichever thread read it (each takes its files in order). When the
 * helper has not woken by the time the caller ran out of files, the caller takes the job
 * back and does not wait. tar reads on one core; zstd takes much less than the other. */
typedef struct {
    int dir_fd;
    const Plain *run;
    unsigned char *buf;
    Py_ssize_t n;
    Py_ssize_t next;  /* the next file to take (atomic) */
    Py_ssize_t stop;  /* the first file that failed, or n (atomic) */
} Reads;

static void read_some(Reads *r)
{
    for (;;) {
        Py_ssize_t i = __atomic_fetch_add(&r->next, 1, __ATOMIC_RELAXED);
        if (i >= r->n || i > __atomic_load_n(&r->stop, __ATOMIC_RELAXED))
            return;
        const Plain *f = &r->run[i];
        if (read_plain(r->dir_fd, f, r->buf + f->at + f->head) != 0) {
            Py_ssize_t seen = __atomic_load_n(&r->stop, __ATOMIC_RELAXED);
            while (i < seen && !__atomic_compare_exchange_n(&r->stop, &seen, i, 0,
                                                             __ATOMIC_RELAXED,
                                                             __ATOMIC_RELAXED))
                ;
            return;
        }
    }
}

enum { IDLE, POSTED, TAKEN, FINISHED };
/* The calling thread owns the helper for a run (a second saving thread reads alone). */
static pthread_mutex_t helper_owner = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t helper_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t helper_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t helper_done = PTHREAD_COND_INITIALIZER;
static Reads *helper_job;
static int helper_state = IDLE, helper_started;
/* Runs this short are read by the caller alone: waking the helper costs about a file. */
#define HELPED_MIN 8

static void *helper_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&helper_lock);
    for (;;) {
        while (helper_state != POSTED)
            pthread_cond_wait(&helper_wake, &helper_lock);
        helper_state = TAKEN;
        Reads *r = helper_job;
        pthread_mutex_unlock(&helper_lock);
        read_some(r);
        pthread_mutex_lock(&helper_lock);
        helper_state = FINISHED;
        pthread_cond_signal(&helper_done);
    }
    return NULL;
}

/* After a fork the child has no helper (only the forking thread goes on), and the locks
 * may have been held by a thread that is not there. */
static void helper_forked(void)
{
    pthread_mutex_init(&helper_owner, NULL);
    pthread_mutex_init(&helper_lock, NULL);
    pthread_cond_init(&helper_wake, NULL);
    pthread_cond_init(&helper_done, NULL);
    helper_state = IDLE;
    helper_started = 0;
}

static int helper_ready(void)
{
    if (helper_started)
        return 1;
    /* On one core a helper would only take turns with the caller. */
    cpu_set_t cpus;
    if (sched_getaffinity(0, sizeof cpus, &cpus) != 0 || CPU_COUNT(&cpus) < 2)
        return 0;
    pthread_attr_t attr;
    pthread_t thread;
    if (pthread_attr_init(&attr) != 0)
        return 0;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10);
    int ok = pthread_create(&thread, &attr, helper_main, NULL) == 0;
    pthread_attr_destroy(&attr);
    helper_started = ok;
    return ok;
}

/* Read the files of the run; the number read before the first that failed. Called
 * without the GIL. */
static Py_ssize_t read_run(int dir_fd, const Plain *run, unsigned char *buf, Py_ssize_t n)
{
    Reads r = {dir_fd, run, buf, n, 0, n};
    int helped = n >= HELPED_MIN && pthread_mutex_trylock(&helper_owner) == 0;
    if (helped && !helper_ready()) {
        pthread_mutex_unlock(&helper_owner);
        helped = 0;
    }
    if (helped) {
        pthread_mutex_lock(&helper_lock);
        helper_job = &r;
        helper_state = POSTED;
        pthread_cond_signal(&helper_wake);
        pthread_mutex_unlock(&helper_lock);
    }
    read_some(&r);
    if (helped) {
        pthread_mutex_lock(&helper_lock);
        if (helper_state == POSTED)
            helper_state = IDLE;  /* not woken yet: nothing left for it */
        else
            while (helper_state != FINISHED)
                pthread_cond_wait(&helper_done, &helper_lock);
        helper_state = IDLE;
        helper_job = NULL;
        pthread_mutex_unlock(&helper_lock);
        pthread_mutex_unlock(&helper_owner);
    }
    return __atomic_load_n(&r.stop, __ATOMIC_ACQUIRE);
}

/* The record of a file (records.whole_file_record) at ``p``: frame, fixed part, path,
 * extent (none when empty), crc32 of them all. */
static void put_record(unsigned char *p, const Plain *f, const unsigned char *prefix,
                       Py_ssize_t cut, int64_t mtime, int64_t atime)
{
    unsigned char *start = p;
    const uint64_t size = (uint64_t)f->st.st_size;
    *p++ = 'E';
    p = put32(p, (uint32_t)(f->head - FRAME_SIZE - CRC_SIZE));
    p = put64(p, size + DIGEST_SIZE);
    *p++ = 'f';
    p = put32(p, (uint32_t)f->st.st_mode);
    p = put32(p, (uint32_t)f->st.st_uid);
    p = put32(p, (uint32_t)f->st.st_gid);
    p = put64(p, (uint64_t)mtime);
    p = put64(p, (uint64_t)atime);
    p = put64(p, 0);
    p = put64(p, size);
    p = put32(p, (uint32_t)(cut + f->len));
    p = put32(p, 0);
    p = put16(p, 0);
    p = put32(p, size ? 1 : 0);
    memcpy(p, prefix, (size_t)cut);
    memcpy(p + cut, f->name, (size_t)f->len);
    p += cut + f->len;
    if (size) {
        p = put64(p, 0);
        p = put64(p, size);
    }
    put32(p, crc32_of(start, (size_t)(p - start)));
}

/* Its manifest line (manifest.encode_entry) at ``l``: kind, path, mode (octal), uid, gid,
 * size, mtime, ctime, inode, rdev, digest, xattr digest (none), set, target (none). */
static char *put_line(char *l, const Plain *f, const unsigned char *prefix, Py_ssize_t cut,
                      int64_t mtime, int64_t ctime, const unsigned char *digest,
                      unsigned int set_index)
{
    static const char hex[] = "0123456789abcdef";
    *l++ = 'f';
    *l++ = '\t';
    memcpy(l, prefix, (size_t)cut);
    memcpy(l + cut, f->name, (size_t)f->len);
    l += cut + f->len;
    *l++ = '\t';
    l = put_octal(l, (unsigned int)f->st.st_mode);
    *l++ = '\t';
    l = put_unsigned(l, f->st.st_uid);
    *l++ = '\t';
    l = put_unsigned(l, f->st.st_gid);
    *l++ = '\t';
    l = put_unsigned(l, (unsigned long long)f->st.st_size);
    *l++ = '\t';
    l = put_signed(l, mtime);
    *l++ = '\t';
    l = put_signed(l, ctime);
    *l++ = '\t';
    l = put_unsigned(l, f->st.st_ino);
    *l++ = '\t';
    l = put_unsigned(l, f->st.st_rdev);
    *l++ = '\t';
    for (int i = 0; i < DIGEST_SIZE; i++) {
        *l++ = hex[digest[i] >> 4];
        *l++ = hex[digest[i] & 15];
    }
    *l++ = '\t';
    *l++ = '\t';
    l = put_unsigned(l, set_index);
    *l++ = '\t';
    *l++ = '\n';
    return l;
}

/* Whether a name of the listing may be taken: one whose path the manifest writes as it
 * is, not too long. */
static int plain_name(PyObject *item, Py_ssize_t cut)
{
    if (!PyBytes_Check(item))
        return 0;
    const unsigned char *nm = (const unsigned char *)PyBytes_AS_STRING(item);
    Py_ssize_t n = PyBytes_GET_SIZE(item);
    return n >= 1 && n <= NAME_MAX && cut + n <= PATH_LIMIT && plain_text(nm, n)
           && memchr(nm, '/', (size_t)n) == NULL
           && !(n == 1 && nm[0] == '.') && !(n == 2 && nm[0] == '.' && nm[1] == '.');
}

PyDoc_STRVAR(save_run_doc,
"save_run(dir_fd, names, index, stop, prefix, device, set_index, room, room_entries, of)\n"
"\n"
"Save the plain files among ``names[index:stop]`` (a directory's sorted names, ``prefix``\n"
"its path and a slash, or nothing for the root; ``device`` the tree's) as long as they\n"
"come one after another: each one's record, data and digest (``of`` gives a digest) into\n"
"the records, its manifest line (of the set ``set_index``) into the lines. The records\n"
"stay within ``room`` bytes and ``room_entries`` entries (what the block being gathered\n"
"still takes). Returns (status, index, records, lines, files, data bytes): status 0 when\n"
"it reached ``stop``, 1 when the block is full, 2 when ``names[index]`` is for the\n"
"general path.");

static PyObject *save_run(PyObject *self, PyObject *args)
{
    (void)self;
    int dir_fd;
    Py_ssize_t index, stop, room, room_entries;
    PyObject *names, *of;
    Py_buffer prefix;
    unsigned long long device_arg;
    unsigned int set_index;
    if (!PyArg_ParseTuple(args, "iO!nny*KInnO", &dir_fd, &PyList_Type, &names, &index, &stop,
                          &prefix, &device_arg, &set_index, &room, &room_entries, &of))
        return NULL;
    const dev_t device = (dev_t)device_arg;
    const unsigned char *pre = prefix.buf;
    const Py_ssize_t cut = prefix.len;
    PyObject *result = NULL, *records = NULL, *lines = NULL;
    Plain *run = NULL;
    Py_ssize_t planned = 0, made = 0;
    long long data_bytes = 0;
    int status = DONE;
    if (index < 0 || stop > PyList_GET_SIZE(names) || room < 0 || room_entries < 0) {
        PyErr_SetString(PyExc_ValueError, "index, stop or room out of range");
        goto done;
    }
    if (cut > PATH_LIMIT || !plain_text(pre, cut)) {
        status = GENERAL;
        goto answer;
    }
    /* The names that may be taken, as far as the block's entries go. */
    Py_ssize_t count = 0;
    while (index + count < stop && count < room_entries
           && plain_name(PyList_GET_ITEM(names, index + count), cut))
        count++;
    run = PyMem_Malloc(sizeof(Plain) * (size_t)(count ? count : 1));
    if (run == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(names, index + i);
        run[i].name = PyBytes_AS_STRING(item);
        run[i].len = PyBytes_GET_SIZE(item);
    }
    /* Which of them are plain files, and where each goes, by their stat: the system
     * calls without the GIL, the first for all of the run, then the reads. */
    size_t total = 0;
    int no_room = 0;
    Py_BEGIN_ALLOW_THREADS
    for (; planned < count; planned++) {
        Plain *f = &run[planned];
        if (fstatat(dir_fd, f->name, &f->st, AT_SYMLINK_NOFOLLOW) != 0
                || !plain_stat(&f->st, device))
            break;
        f->head = START_SIZE + (size_t)(cut + f->len) + (f->st.st_size ? EXTENT_SIZE : 0)
                  + CRC_SIZE;
        size_t entry = f->head + (size_t)f->st.st_size + DIGEST_SIZE;
        if (total + entry > (size_t)room) {
            no_room = 1;
            break;
        }
        f->at = total;
        total += entry;
    }
    Py_END_ALLOW_THREADS
    if (no_room || (planned == count && count == room_entries && index + count < stop))
        status = FULL;
    else if (index + planned < stop)
        status = GENERAL;
    records = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (records == NULL)
        goto done;
    unsigned char *buf = (unsigned char *)PyBytes_AS_STRING(records);
    Py_BEGIN_ALLOW_THREADS
    made = read_run(dir_fd, run, buf, planned);
    Py_END_ALLOW_THREADS
    if (made < planned)
        status = GENERAL;  /* at the one that failed: the general path reads it again */
    /* The digests, records and lines of those read, as far as their times fit. */
    size_t line_room = 0;
    for (Py_ssize_t i = 0; i < made; i++)
        line_room += (size_t)(cut + run[i].len) + LINE_BEYOND_PATH;
    lines = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)line_room);
    if (lines == NULL)
        goto done;
    char *l = PyBytes_AS_STRING(lines);
    for (Py_ssize_t i = 0; i < made; i++) {
        Plain *f = &run[i];
        int64_t mtime, atime, ctime;
        if (!time_ns(&f->st.st_mtim, &mtime) || !time_ns(&f->st.st_atim, &atime)
                || !time_ns(&f->st.st_ctim, &ctime)) {
            made = i;
            status = GENERAL;
            break;
        }
        unsigned char *data = buf + f->at + f->head;
        const size_t size = (size_t)f->st.st_size;
        put_record(buf + f->at, f, pre, cut, mtime, atime);
        PyObject *view = PyMemoryView_FromMemory((char *)data, (Py_ssize_t)size, PyBUF_READ);
        if (view == NULL)
            goto done;
        PyObject *digest = PyObject_CallOneArg(of, view);
        Py_DECREF(view);
        if (digest == NULL)
            goto done;
        if (!PyBytes_Check(digest) || PyBytes_GET_SIZE(digest) != DIGEST_SIZE) {
            Py_DECREF(digest);
            PyErr_SetString(PyExc_ValueError, "a digest is 32 bytes");
            goto done;
        }
        const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(digest);
        memcpy(data + size, d, DIGEST_SIZE);
        l = put_line(l, f, pre, cut, mtime, ctime, d, set_index);
        Py_DECREF(digest);
        data_bytes += (long long)size;
    }
    if (_PyBytes_Resize(&records, made ? (Py_ssize_t)(run[made - 1].at + run[made - 1].head
                                                      + (size_t)run[made - 1].st.st_size
                                                      + DIGEST_SIZE) : 0) != 0
            || _PyBytes_Resize(&lines, l - PyBytes_AS_STRING(lines)) != 0)
        goto done;
    index += made;
answer:
    if (records == NULL && (records = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        goto done;
    if (lines == NULL && (lines = PyBytes_FromStringAndSize(NULL, 0)) == NULL)
        goto done;
    result = Py_BuildValue("inOOnL", status, index, records, lines, made, data_bytes);
done:
    Py_XDECREF(records);
    Py_XDECREF(lines);
    PyMem_Free(run);
    PyBuffer_Release(&prefix);
    return result;
}

typedef struct {
    const char *name;
    size_t len;
} Name;

static int by_bytes(const void *a, const void *b)
{
    const Name *x = a, *y = b;
    int c = memcmp(x->name, y->name, x->len < y->len ? x->len : y->len);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

PyDoc_STRVAR(sorted_names_doc,
"sorted_names(dir_fd)\n"
"\n"
"The names in the open directory ``dir_fd`` (but . and ..), as bytes, sorted: what\n"
"walk.sorted_names gives, without a str made and encoded again for each.");

static PyObject *sorted_names(PyObject *self, PyObject *arg)
{
    (void)self;
    int dir_fd;
    if (!PyArg_Parse(arg, "i", &dir_fd))
        return NULL;
    char *text = NULL;
    Name *names = NULL;
    size_t used = 0, size = 0, count = 0, room = 0;
    int error = 0;
    PyObject *result = NULL;
    Py_BEGIN_ALLOW_THREADS
    /* As os.listdir(fd): a duplicate of the descriptor (sharing its offset), read from its
     * start and left there. */
    int fd = fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    DIR *dir = fd < 0 ? NULL : fdopendir(fd);
    if (dir == NULL) {
        error = errno;
        if (fd >= 0)
            close(fd);
    } else {
        struct dirent *e;
        rewinddir(dir);
        for (;;) {
            errno = 0;
            if ((e = readdir(dir)) == NULL) {
                error = errno;
                break;
            }
            const char *n = e->d_name;
            if (n[0] == '.' && (n[1] == '\0' || (n[1] == '.' && n[2] == '\0')))
                continue;
            size_t len = strlen(n);
            if (used + len > size) {
                size_t grown = size ? size * 2 : 1u << 14;
                while (grown < used + len)
                    grown *= 2;
                char *t = realloc(text, grown);
                if (t == NULL) {
                    error = ENOMEM;
                    break;
                }
                text = t;
                size = grown;
            }
            if (count == room) {
                size_t grown = room ? room * 2 : 256;
                Name *m = realloc(names, grown * sizeof(Name));
                if (m == NULL) {
                    error = ENOMEM;
                    break;
                }
                names = m;
                room = grown;
            }
            memcpy(text + used, n, len);
            names[count].name = (const char *)(uintptr_t)used;  /* an offset until sorted */
            names[count].len = len;
            used += len;
            count++;
        }
        rewinddir(dir);  /* the offset is the caller's descriptor's too */
        closedir(dir);
        if (!error) {
            for (size_t i = 0; i < count; i++)
                names[i].name = text + (uintptr_t)names[i].name;
            qsort(names, count, sizeof(Name), by_bytes);
        }
    }
    Py_END_ALLOW_THREADS
    if (error) {
        errno = error;
        PyErr_SetFromErrno(error == ENOMEM ? PyExc_MemoryError : PyExc_OSError);
        goto done;
    }
    result = PyList_New((Py_ssize_t)count);
    if (result == NULL)
        goto done;
    for (size_t i = 0; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize(names[i].name, (Py_ssize_t)names[i].len);
        if (b == NULL) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, (Py_ssize_t)i, b);
    }
done:
    free(text);
    free(names);
    return result;
}

static PyMethodDef methods[] = {
    {"save_run", save_run, METH_VARARGS, save_run_doc},
    {"sorted_names", sorted_names, METH_O, sorted_names_doc},
    {NULL, NULL, 0, NULL},
};

/* The sha256 of this file as it was built (setup.py gives it): resurgo.engine.extensions
 * takes a module built from another version of the source beside it for none. */
#ifndef RESURGO_SOURCE_SHA256
#define RESURGO_SOURCE_SHA256 ""
#endif

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_plainsave",
    "The save's plain-file hot path (see save._Saver.plain_run).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__plainsave(void)
{
    crc_init();
    if (pthread_atfork(NULL, NULL, helper_forked) != 0)
        return PyErr_NoMemory();
    PyObject *m = PyModule_Create(&module);
    /* save_run's arguments and what it returns: save.py takes a module whose API differs
     * (built from an older source) for none. */
    if (m != NULL && (PyModule_AddIntConstant(m, "API", 1) != 0
                      || PyModule_AddStringConstant(m, "SOURCE_SHA256",
                                                    RESURGO_SOURCE_SHA256) != 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
