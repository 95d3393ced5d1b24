/* `chexnet train` over several processes (src/cli/mpi_comm.c): MPI when the
 * build has it, and how a process learns that a launcher (mpirun, srun)
 * started it as one of several ranks. */
#ifndef CX_CLI_MPI_H
#define CX_CLI_MPI_H

#include "chexnet.h"

typedef struct cli_mpi cli_mpi;

/* 1 if this build has MPI. */
int cli_mpi_available(void);
/* 1 if a launcher started this process as a rank (from its environment,
 * before any MPI call): *rank and *size as the launcher said. */
int cli_mpi_launched(int *rank, int *size);
/* MPI_Init and the group's cx_comm; NULL (and err) on failure. */
cli_mpi *cli_mpi_init(int *argc, char ***argv, cx_err *err);
const cx_comm *cli_mpi_comm(const cli_mpi *m);
/* Ranks on this machine. */
int cli_mpi_local_size(const cli_mpi *m);
/* Threads for this rank so that the ranks of a machine do not oversubscribe
 * its cores: the cores it may run on, at most the machine's cores divided
 * by its ranks (at least 1). */
int cli_mpi_default_threads(const cli_mpi *m);
/* Seconds spent waiting for gradient sums to finish. */
double cli_mpi_wait_seconds(const cli_mpi *m);
/* Ends every rank of the job (after this rank printed why). */
void cli_mpi_abort(cli_mpi *m, int code);
void cli_mpi_finalize(cli_mpi *m);

#endif
