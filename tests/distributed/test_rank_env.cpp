// axon::rank_environment under each launcher's variables. The variables are handed in through
// rank_environment's lookup argument (the function reads nothing else); the end-to-end tests run
// rank_env_print under real mpirun, axonrun (tests/launcher) and srun (tests/slurm).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>

#include "axon/communicator.h"
#include "axon/rank_env.h"

namespace {

using axon::RankEnvironment;
using axon::RankEnvironmentError;
using ::testing::HasSubstr;

using Vars = std::map<std::string, std::string>;

RankEnvironment read(const Vars& vars) {
  return axon::rank_environment([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

// The message of the RankEnvironmentError that reading `vars` throws ("" if none).
std::string error_of(const Vars& vars) {
  try {
    read(vars);
  } catch (const RankEnvironmentError& e) {
    return e.what();
  }
  return "";
}

TEST(RankEnv, NoLauncherIsASingleProcess) {
  RankEnvironment env = read({});
  EXPECT_EQ(env.source, "none");
  EXPECT_FALSE(env.launched());
  EXPECT_EQ(env.rank, 0);
  EXPECT_EQ(env.world_size, 1);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.local_world_size, 1);
  EXPECT_FALSE(env.node_rank.has_value());
}

TEST(RankEnv, OpenMpi) {
  RankEnvironment env = read({{"OMPI_COMM_WORLD_RANK", "5"},
                              {"OMPI_COMM_WORLD_SIZE", "8"},
                              {"OMPI_COMM_WORLD_LOCAL_RANK", "1"},
                              {"OMPI_COMM_WORLD_LOCAL_SIZE", "4"},
                              {"PMIX_RANK", "5"}});
  EXPECT_EQ(env.source, "openmpi");
  EXPECT_TRUE(env.launched());
  EXPECT_EQ(env.rank, 5);
  EXPECT_EQ(env.world_size, 8);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 4);
  EXPECT_FALSE(env.node_rank.has_value()) << "Open MPI exports no node index";
}

TEST(RankEnv, SlurmStep) {
  // srun -N 3 -n 7: tasks per node 3,2,2; this is rank 4, the second task on node 1.
  RankEnvironment env = read({{"SLURM_JOB_ID", "12"},
                              {"SLURM_STEP_ID", "0"},
                              {"SLURM_PROCID", "4"},
                              {"SLURM_STEP_NUM_TASKS", "7"},
                              {"SLURM_NTASKS", "9"},  // the allocation's: the step's wins
                              {"SLURM_LOCALID", "1"},
                              {"SLURM_NODEID", "1"},
                              {"SLURM_STEP_NUM_NODES", "3"},
                              {"SLURM_STEP_TASKS_PER_NODE", "3,2(x2)"}});
  EXPECT_EQ(env.source, "slurm");
  EXPECT_EQ(env.rank, 4);
  EXPECT_EQ(env.world_size, 7);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.num_nodes, 3);
}

TEST(RankEnv, SlurmBatchScriptIsOneProcessNotAJobOfNTasks) {
  // sbatch -n 2 runs its script once, with SLURM_NTASKS=2 and SLURM_PROCID=0 but no step id.
  Vars batch = {{"SLURM_JOB_ID", "12"}, {"SLURM_PROCID", "0"}, {"SLURM_NTASKS", "2"},
                {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "0"}, {"SLURM_TASKS_PER_NODE", "2"}};
  EXPECT_EQ(read(batch).source, "none");
  batch["SLURM_STEP_ID"] = "4294967291";  // the batch step's number, where it is set
  EXPECT_EQ(read(batch).source, "none");
}

TEST(RankEnv, Mpich) {
  RankEnvironment env = read({{"PMI_RANK", "2"}, {"PMI_SIZE", "4"}, {"MPI_LOCALRANKID", "0"}, {"MPI_LOCALNRANKS", "2"}});
  EXPECT_EQ(env.source, "mpich");
  EXPECT_EQ(env.rank, 2);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 0);
  EXPECT_EQ(env.local_world_size, 2);
}

TEST(RankEnv, Torchrun) {
  RankEnvironment env = read({{"RANK", "3"},
                              {"WORLD_SIZE", "4"},
                              {"LOCAL_RANK", "1"},
                              {"LOCAL_WORLD_SIZE", "2"},
                              {"GROUP_RANK", "1"},
                              {"MASTER_ADDR", "node0.example"},
                              {"MASTER_PORT", "29500"}});
  EXPECT_EQ(env.source, "torchrun");
  EXPECT_EQ(env.rank, 3);
  EXPECT_EQ(env.world_size, 4);
  EXPECT_EQ(env.local_rank, 1);
  EXPECT_EQ(env.local_world_size, 2);
  EXPECT_EQ(env.node_rank, 1);
  EXPECT_EQ(env.num_nodes, 2);
  EXPECT_EQ(env.master_addr, "node0.example");
  EXPECT_EQ(env.master_port, 29500);

  // Without LOCAL_RANK and LOCAL_WORLD_SIZE the ranks are taken to share one node.
  RankEnvironment one_node = read({{"RANK", "1"}, {"WORLD_SIZE", "2"}});
  EXPECT_EQ(one_node.local_rank, 1);
  EXPECT_EQ(one_node.local_world_size, 2);
}

TEST(RankEnv, PrecedenceOpenMpiThenSlurmStepThenMpichThenTorchrun) {
  Vars all = {{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"},
              {"SLURM_STEP_ID", "0"},        {"SLURM_PROCID", "0"},
              {"SLURM_STEP_NUM_TASKS", "1"}, {"SLURM_LOCALID", "0"},
              {"SLURM_NODEID", "0"},         {"PMI_RANK", "2"},
              {"PMI_SIZE", "3"},             {"RANK", "3"},
              {"WORLD_SIZE", "4"}};
  // mpirun inside an srun step (or an sbatch script): every rank inherits SLURM_PROCID=0.
  EXPECT_EQ(read(all).source, "openmpi");
  EXPECT_EQ(read(all).rank, 1);
  all.erase("OMPI_COMM_WORLD_RANK");
  all.erase("OMPI_COMM_WORLD_SIZE");
  EXPECT_EQ(read(all).source, "slurm");
  all.erase("SLURM_STEP_ID");
  EXPECT_EQ(read(all).source, "mpich");
  all.erase("PMI_RANK");
  all.erase("PMI_SIZE");
  EXPECT_EQ(read(all).source, "torchrun");
  EXPECT_EQ(read(all).rank, 3);
}

TEST(RankEnv, MalformedValuesNameTheVariable) {
  for (const char* bad : {"-1", " 1", "+1", "1x", "0x1", "1.0", "99999999999"}) {
    SCOPED_TRACE(bad);
    std::string message = error_of({{"OMPI_COMM_WORLD_RANK", bad}, {"OMPI_COMM_WORLD_SIZE", "2"}});
    EXPECT_THAT(message, HasSubstr(std::string("OMPI_COMM_WORLD_RANK='") + bad + "'"));
    EXPECT_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", bad}}), HasSubstr(std::string("WORLD_SIZE='") + bad + "'"));
    EXPECT_THAT(error_of({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "1"},
                          {"SLURM_LOCALID", bad}, {"SLURM_NODEID", "0"}}),
                HasSubstr(std::string("SLURM_LOCALID='") + bad + "'"));
  }
  EXPECT_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "http"}}), HasSubstr("MASTER_PORT='http'"));
  EXPECT_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_PORT", "70000"}}),
              HasSubstr("MASTER_PORT=70000 is not a TCP port"));
}

TEST(RankEnv, InconsistentValuesNameBothVariables) {
  EXPECT_THAT(error_of({{"OMPI_COMM_WORLD_RANK", "2"}, {"OMPI_COMM_WORLD_SIZE", "2"}}),
              HasSubstr("OMPI_COMM_WORLD_RANK=2 is not below OMPI_COMM_WORLD_SIZE=2"));
  EXPECT_THAT(error_of({{"OMPI_COMM_WORLD_RANK", "0"}, {"OMPI_COMM_WORLD_SIZE", "0"}}),
              HasSubstr("OMPI_COMM_WORLD_SIZE=0 (Open MPI): must be at least 1"));
  EXPECT_THAT(error_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "4"},
                        {"OMPI_COMM_WORLD_LOCAL_RANK", "2"}, {"OMPI_COMM_WORLD_LOCAL_SIZE", "2"}}),
              HasSubstr("OMPI_COMM_WORLD_LOCAL_RANK=2 is not below OMPI_COMM_WORLD_LOCAL_SIZE=2"));
  EXPECT_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}, {"LOCAL_WORLD_SIZE", "3"}}),
              HasSubstr("LOCAL_WORLD_SIZE=2 is not below WORLD_SIZE=2"));
  EXPECT_THAT(error_of({{"OMPI_COMM_WORLD_RANK", "1"}, {"OMPI_COMM_WORLD_SIZE", "2"}, {"PMIX_RANK", "0"}}),
              HasSubstr("PMIX_RANK=0 differs from OMPI_COMM_WORLD_RANK=1"));
  EXPECT_THAT(error_of({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "4"},
                        {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "2"}, {"SLURM_STEP_NUM_NODES", "2"}}),
              HasSubstr("SLURM_NODEID=2 is not below SLURM_STEP_NUM_NODES=2"));
}

TEST(RankEnv, AMissingCompanionVariableIsNamed) {
  EXPECT_THAT(error_of({{"RANK", "1"}}), HasSubstr("RANK is set but WORLD_SIZE is not"));
  EXPECT_THAT(error_of({{"WORLD_SIZE", "2"}}), HasSubstr("WORLD_SIZE is set but RANK is not"));
  EXPECT_THAT(error_of({{"OMPI_COMM_WORLD_SIZE", "2"}}), HasSubstr("OMPI_COMM_WORLD_SIZE is set but OMPI_COMM_WORLD_RANK is not"));
  EXPECT_THAT(error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "0"}}),
              HasSubstr("LOCAL_RANK is set but LOCAL_WORLD_SIZE is not"));
  EXPECT_THAT(error_of({{"PMIX_RANK", "1"}}), HasSubstr("PMIX_RANK='1' is set but no launcher variable gives the world size"));
  EXPECT_THAT(error_of({{"SLURM_STEP_ID", "0"}, {"SLURM_PROCID", "0"}, {"SLURM_STEP_NUM_TASKS", "4"},
                        {"SLURM_LOCALID", "0"}, {"SLURM_NODEID", "0"}, {"SLURM_STEP_NUM_NODES", "2"}}),
              HasSubstr("neither SLURM_STEP_TASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set"));
}

TEST(RankEnv, SlurmTasksPerNodeLists) {
  EXPECT_EQ(axon::slurm_tasks_on_node("L", "4", 0), 4);
  EXPECT_EQ(axon::slurm_tasks_on_node("L", "2(x3),1", 2), 2);
  EXPECT_EQ(axon::slurm_tasks_on_node("L", "2(x3),1", 3), 1);
  EXPECT_THAT([] { axon::slurm_tasks_on_node("L", "2(x3),1", 4); },
              ::testing::ThrowsMessage<RankEnvironmentError>(HasSubstr("L='2(x3),1': no entry for node 4 (the list covers 4 nodes)")));
  for (const char* bad : {"", "x", "2(x)", "2(x3", "0", "2,,1", "-1"}) {
    EXPECT_THROW(axon::slurm_tasks_on_node("L", bad, 0), RankEnvironmentError) << bad;
  }
}

// The process-environment entry points read the same variables.
TEST(RankEnv, ProcessEnvironmentFunctionsAgree) {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                           "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_RANK", "SLURM_STEP_ID", "SLURM_STEPID", "PMI_RANK",
                           "PMI_SIZE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"})
    unsetenv(name);
  EXPECT_FALSE(axon::launched_with_ranks());
  setenv("RANK", "1", 1);
  setenv("WORLD_SIZE", "3", 1);
  setenv("LOCAL_RANK", "1", 1);
  setenv("LOCAL_WORLD_SIZE", "3", 1);
  EXPECT_TRUE(axon::launched_with_ranks());
  EXPECT_EQ(axon::local_rank(), 1);
  EXPECT_EQ(axon::local_world_size(), 3);
  setenv("LOCAL_RANK", "x", 1);
  EXPECT_THROW(axon::local_rank(), RankEnvironmentError);
  for (const char* name : {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}) unsetenv(name);
}

}  // namespace
