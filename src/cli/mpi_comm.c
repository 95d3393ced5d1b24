/* The MPI side of `chexnet train` over several processes: a cx_comm (the
 * library's collective operations) on Open MPI or any MPI, and how a rank
 * finds its place. Built only where the build found MPI (CX_HAVE_MPI);
 * otherwise the functions say that MPI is missing.
 *
 * Gradient sums (MPI_Iallreduce) go on a communicator of their own, the
 * blocking sums and broadcasts (sync-BN statistics, losses, counts, the
 * resume state) on another, so the two streams never wait on each other's
 * order. Open MPI moves a started MPI_Iallreduce along only inside MPI calls:
 * progress() (an MPI_Testall) is called by the trainer as each part of the
 * backward pass finishes. MPI's default error handler stays: a failed
 * operation (a rank gone) ends the job rather than hanging it. */
#include "cli_mpi.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int cli_mpi_launched(int *rank, int *size)
{
    /* Open MPI's mpirun, PMIx (Open MPI 5, srun --mpi=pmix), PMI-1/2 (srun
     * --mpi=pmi2, MPICH's launchers) */
    static const char *sz[] = {"OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "PMI_SIZE", NULL};
    static const char *rk[] = {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", NULL};
    *rank = 0;
    *size = 1;
    int found = 0;
    for (int i = 0; sz[i]; i++) {
        const char *s = getenv(sz[i]), *r = getenv(rk[i]);
        if (r && !found) {
            found = 1;
            *rank = atoi(r);
            if (s)
                *size = atoi(s);
        }
    }
    /* srun without an MPI plugin: Slurm's own variables (a job step of
     * several tasks; a batch script's own step has one) */
    const char *tasks = getenv("SLURM_STEP_NUM_TASKS");
    if (!found && tasks && atoi(tasks) > 1 && getenv("SLURM_PROCID")) {
        *rank = atoi(getenv("SLURM_PROCID"));
        *size = atoi(tasks);
        found = 1;
    }
    if (*size < 1)
        *size = 1;
    return found;
}

#ifdef CX_HAVE_MPI
#include <mpi.h>
#include <omp.h>

#define MAX_REQ 4096

struct cli_mpi {
    cx_comm comm;
    MPI_Comm blocking, grads;
    MPI_Request req[MAX_REQ];
    int nreq;
    int local_size;
    double wait_s;  /* spent in wait_all */
    double sent_bytes;
};

int cli_mpi_available(void) { return 1; }

static cx_status mpi_err(cx_err *err, const char *what, int rc)
{
    char s[MPI_MAX_ERROR_STRING];
    int n = 0;
    MPI_Error_string(rc, s, &n);
    return cx_seterr(err, CX_EIO, "MPI %s failed: %s", what, s);
}

static cx_status allreduce_f64(void *user, double *v, size_t n, cx_err *err)
{
    cli_mpi *m = user;
    while (n > 0) {
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Allreduce(MPI_IN_PLACE, v, k, MPI_DOUBLE, MPI_SUM, m->blocking);
        if (rc != MPI_SUCCESS)
            return mpi_err(err, "MPI_Allreduce", rc);
        v += k;
        n -= (size_t)k;
    }
    return CX_OK;
}

static cx_status wait_all(void *user, cx_err *err)
{
    cli_mpi *m = user;
    double t0 = now_s();
    int rc = m->nreq ? MPI_Waitall(m->nreq, m->req, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    m->wait_s += now_s() - t0;
    m->nreq = 0;
    return rc == MPI_SUCCESS ? CX_OK : mpi_err(err, "MPI_Waitall", rc);
}

static cx_status iallreduce_f32(void *user, float *v, size_t n, cx_err *err)
{
    cli_mpi *m = user;
    m->sent_bytes += (double)n * sizeof(float);
    while (n > 0) {
        if (m->nreq == MAX_REQ) {
            cx_status st = wait_all(m, err);
            if (st)
                return st;
        }
        int k = n > INT_MAX ? INT_MAX : (int)n;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, v, k, MPI_FLOAT, MPI_SUM, m->grads,
                                &m->req[m->nreq]);
        if (rc != MPI_SUCCESS)
            return mpi_err(err, "MPI_Iallreduce", rc);
        m->nreq++;
        v += k;
        n -= (size_t)k;
    }
    return CX_OK;
}

static cx_status progress(void *user, cx_err *err)
{
    cli_mpi *m = user;
    int done = 0;
    int rc = m->nreq ? MPI_Testall(m->nreq, m->req, &done, MPI_STATUSES_IGNORE) : MPI_SUCCESS;
    if (rc != MPI_SUCCESS)
        return mpi_err(err, "MPI_Testall", rc);
    if (done)
        m->nreq = 0;
    return CX_OK;
}

static cx_status bcast(void *user, void *buf, size_t bytes, int root, cx_err *err)
{
    cli_mpi *m = user;
    char *p = buf;
    while (bytes > 0) {
        int k = bytes > INT_MAX ? INT_MAX : (int)bytes;
        int rc = MPI_Bcast(p, k, MPI_BYTE, root, m->blocking);
        if (rc != MPI_SUCCESS)
            return mpi_err(err, "MPI_Bcast", rc);
        p += k;
        bytes -= (size_t)k;
    }
    return CX_OK;
}

cli_mpi *cli_mpi_init(int *argc, char ***argv, cx_err *err)
{
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        cx_seterr(err, CX_EIO, "MPI_Init_thread failed");
        return NULL;
    }
    cli_mpi *m = calloc(1, sizeof *m);
    if (!m) {
        cx_seterr(err, CX_ENOMEM, "out of memory");
        return NULL;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &m->comm.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &m->comm.size);
    MPI_Comm_dup(MPI_COMM_WORLD, &m->blocking);
    MPI_Comm_dup(MPI_COMM_WORLD, &m->grads);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
    MPI_Comm_size(local, &m->local_size);
    MPI_Comm_free(&local);
    m->comm.user = m;
    m->comm.allreduce_f64 = allreduce_f64;
    m->comm.iallreduce_f32 = iallreduce_f32;
    m->comm.progress = progress;
    m->comm.wait_all = wait_all;
    m->comm.bcast = bcast;
    return m;
}

const cx_comm *cli_mpi_comm(const cli_mpi *m) { return &m->comm; }
int cli_mpi_local_size(const cli_mpi *m) { return m->local_size; }
double cli_mpi_wait_seconds(const cli_mpi *m) { return m ? m->wait_s : 0.0; }

int cli_mpi_default_threads(const cli_mpi *m)
{
    /* the cores this rank may run on, and its share of the machine's */
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    int mine = omp_get_num_procs();
    int share = (int)(online > 0 ? online : mine) / (m->local_size > 0 ? m->local_size : 1);
    int t = mine < share ? mine : share;
    return t > 0 ? t : 1;
}

void cli_mpi_abort(cli_mpi *m, int code)
{
    (void)m;
    MPI_Abort(MPI_COMM_WORLD, code);
}

void cli_mpi_finalize(cli_mpi *m)
{
    if (!m)
        return;
    /* no rank leaves before the others are done (rank 0's files and
     * messages) */
    MPI_Barrier(m->blocking);
    MPI_Comm_free(&m->blocking);
    MPI_Comm_free(&m->grads);
    free(m);
    MPI_Finalize();
}

#else /* no MPI in this build */

int cli_mpi_available(void) { return 0; }
cli_mpi *cli_mpi_init(int *argc, char ***argv, cx_err *err)
{
    (void)argc;
    (void)argv;
    cx_seterr(err, CX_EARG, "this chexnet was built without MPI");
    return NULL;
}
const cx_comm *cli_mpi_comm(const cli_mpi *m)
{
    (void)m;
    return NULL;
}
int cli_mpi_local_size(const cli_mpi *m)
{
    (void)m;
    return 1;
}
double cli_mpi_wait_seconds(const cli_mpi *m)
{
    (void)m;
    return 0;
}
int cli_mpi_default_threads(const cli_mpi *m)
{
    (void)m;
    return 0;
}
void cli_mpi_abort(cli_mpi *m, int code)
{
    (void)m;
    exit(code);
}
void cli_mpi_finalize(cli_mpi *m) { (void)m; }

#endif
