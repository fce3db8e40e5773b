import pytest

from ddp_eval.core.plan import batches_for_rank, plan_batches, skip_done


def costs(n):
    return {i: (i * 7919) % 13 for i in range(n)}


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7, 64])
@pytest.mark.parametrize("n_rows", [1, 10, 23])
def test_every_row_predicted_once_when_world_size_does_not_divide(world_size, n_rows):
    plan = plan_batches(costs(n_rows), batch_size=4)
    assigned = [i for r in range(world_size) for b in batches_for_rank(plan, r, world_size) for i in b.indices]
    assert sorted(assigned) == list(range(n_rows))


def test_batches_do_not_depend_on_world_size():
    plan = plan_batches(costs(50), batch_size=8)
    for world_size in (1, 2, 3, 5):
        batches = sorted((b for r in range(world_size) for b in batches_for_rank(plan, r, world_size)),
                         key=lambda b: b.batch_id)
        assert batches == plan


def test_rows_sorted_by_cost_largest_first_ties_by_index():
    plan = plan_batches({0: 5, 1: 9, 2: 5, 3: 1}, batch_size=2)
    assert [b.indices for b in plan] == [(1, 0), (2, 3)]


def test_skip_done_drops_done_rows_and_empty_batches():
    plan = plan_batches({i: 0 for i in range(6)}, batch_size=2)
    left = skip_done(plan, {0, 1, 3})
    assert [(b.batch_id, b.indices) for b in left] == [(1, (2,)), (2, (4, 5))]


def test_token_budget_caps_padded_batch_size():
    costs = {0: 100, 1: 90, 2: 50, 3: 50, 4: 50, 5: 10}
    plan = plan_batches(costs, batch_size=8, token_budget=200)
    assert [b.indices for b in plan] == [(0, 1), (2, 3, 4, 5)]
    assert all(costs[b.indices[0]] * len(b.indices) <= 200 for b in plan)


def test_row_over_the_budget_still_runs_alone():
    plan = plan_batches({0: 500, 1: 20}, batch_size=8, token_budget=100)
    assert [b.indices for b in plan] == [(0,), (1,)]


@pytest.mark.parametrize("world_size", [1, 3])
def test_token_budget_plan_still_covers_every_row_once(world_size):
    plan = plan_batches(costs(40), batch_size=5, token_budget=30)
    assigned = [i for r in range(world_size) for b in batches_for_rank(plan, r, world_size) for i in b.indices]
    assert sorted(assigned) == list(range(40))


def test_rows_of_one_group_stay_in_one_batch():
    # rows 0, 100, 200 show one image; 1, 101 another; costs tie, as circular copies do
    costs = {0: 5, 1: 5, 2: 5, 100: 5, 101: 5, 200: 5, 3: 5}
    groups = {0: 0, 100: 0, 200: 0, 1: 1, 101: 1, 2: 2, 3: 3}
    plan = plan_batches(costs, batch_size=4, groups=groups)
    batch_of = {i: b.batch_id for b in plan for i in b.indices}
    assert batch_of[0] == batch_of[100] == batch_of[200]
    assert batch_of[1] == batch_of[101]
    assert sorted(i for b in plan for i in b.indices) == sorted(costs)
    assert all(len(b.indices) <= 4 for b in plan)


def test_group_larger_than_a_batch_continues_in_the_next():
    plan = plan_batches({i: 1 for i in range(5)}, batch_size=2, groups={i: 0 for i in range(5)})
    assert [b.indices for b in plan] == [(0, 1), (2, 3), (4,)]
